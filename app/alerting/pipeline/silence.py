"""Silence stage: an alert matched by an active silence is not sent and shows as silenced."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import asyncpg

from app import store_codec
from app.alerting.matchers import Matcher, matches_all, parse_matchers


@dataclass
class ActiveSilence:
    id: str
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    reminded_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ActiveSilence:
        texts = store_codec.decoded(row["matchers"])
        return cls(row["id"], parse_matchers(texts), row["starts_at"], row["ends_at"], row["created_by"],
                   row.get("reminded_at") if hasattr(row, "get") else row["reminded_at"])


async def active_silences(conn: asyncpg.Connection, now: datetime) -> list[ActiveSilence]:
    rows = await conn.fetch("select * from silences where starts_at <= $1 and ends_at > $1", now)
    return [ActiveSilence.from_row(dict(r)) for r in rows]


def silenced_by(labels: Mapping[str, str], silences: list[ActiveSilence]) -> list[str]:
    return [s.id for s in silences if matches_all(s.matchers, labels)]
