"""Ask less per sweep: a cheap fingerprint of slow-changing catalogs, and parts on their own schedule.

Index definitions, constraints and partition bounds change a few times a year, their statistics
every second. A collector reads the fingerprint in the same statement as its live numbers and
re-reads the definitions only when the fingerprint moved, keeping them in its durable state
(Result.state, one JSON text: a str is compact and the garbage collector never walks it).

The fingerprint is count and sum of xmin over the catalogs that hold the definitions. Any DDL
writes a new row version (a new xmin); VACUUM and ANALYZE update pg_class in place (relpages,
reltuples, relfrozenxid keep the row's xmin), so statistics alone never move it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from collectors.spec import Context


def fingerprint_sql(*catalogs: str) -> str:
    """An SQL text expression: count:sum(xmin) of each catalog, joined."""
    parts = [f"(select count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) from {c})" for c in catalogs]
    return " || '/' || ".join(parts)


def cached(previous: Any, key: str, fingerprint: str) -> Any:
    """The decoded catalog read kept under `key` if it was read at this fingerprint, else None."""
    entry = previous.get(key) if isinstance(previous, Mapping) else None
    if not isinstance(entry, Mapping) or entry.get("fp") != fingerprint or not isinstance(entry.get("json"), str):
        return None
    return json.loads(entry["json"])


def keep(fingerprint: str, text: str) -> dict[str, str]:
    """What `cached` reads back: the catalog read as its JSON text, with its fingerprint."""
    return {"fp": fingerprint, "json": text}


def part_due(ctx: Context, key: str, interval_key: str) -> bool:
    """Whether the slow part under `key` of the previous state is due again.

    Its interval is a threshold (`interval_key`, seconds), so it is set per collector, tag or
    instance like any threshold; 0 runs the part on every run.
    """
    entry = ctx.previous.get(key) if isinstance(ctx.previous, Mapping) else None
    if not isinstance(entry, Mapping) or "at" not in entry or not isinstance(entry.get("json"), str):
        return True
    return ctx.now.timestamp() - float(entry["at"]) >= float(ctx.thresholds.get(interval_key) or 0)


def part_rows(ctx: Context, key: str) -> list[dict[str, Any]]:
    """The rows the slow part kept on its last run."""
    return json.loads(ctx.previous[key]["json"])


def part_kept(ctx: Context, key: str, rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The state entry for a slow part: fresh rows stamped now, or the previous entry as it was."""
    if rows is None:
        return dict(ctx.previous[key])
    return {"at": round(ctx.now.timestamp(), 3), "json": json.dumps(rows, separators=(",", ":"), default=str)}
