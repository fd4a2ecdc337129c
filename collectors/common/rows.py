"""Row helpers every engine's collectors share: tagged fetches of several queries, UTC times, NULL counters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from typing import Any

from collectors.spec import Connection

DAY_S = 86_400.0


async def fetch_tagged(conn: Connection, queries: Mapping[str, str], *args: Any) -> list[dict[str, Any]]:
    """Run several read-only queries and tag each row with the query's name as `kind`."""
    rows: list[dict[str, Any]] = []
    for kind, sql in queries.items():
        rows += [{**row, "kind": kind} for row in await conn.fetch(sql, *args)]
    return rows


def by_kind(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row.get("kind", "")), []).append(row)
    return out


def as_utc(value: Any) -> datetime | None:
    """Drivers hand back naive datetimes in the server's clock; collectors compare in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def num(value: Any, default: float = 0.0) -> float:
    """DMV columns are NULL for queries that never ran a step; treat that as zero."""
    return default if value is None else float(value)
