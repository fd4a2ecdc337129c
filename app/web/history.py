"""Per-query history for the instance page's charts, from the stored query_stats deltas."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

_HISTORY = """
select query_id, extract(epoch from ts)::bigint as t, sum(total_ms) as total_ms, sum(calls)::bigint as calls
from query_stats
where instance_id = $1 and query_id = any($2::text[]) and ts >= $3
group by query_id, ts order by query_id, ts
"""


async def query_history(conn, instance_id: int, query_ids: list[str], window: timedelta) -> dict[str, Any]:
    """{query_id: [[epoch seconds...], [total ms...], [calls...]]}, the column layout uPlot draws."""
    out: dict[str, list[list[Any]]] = {}
    since = datetime.now(timezone.utc) - window
    for r in await conn.fetch(_HISTORY, instance_id, query_ids, since):
        cols = out.setdefault(r["query_id"], [[], [], []])
        cols[0].append(r["t"])
        cols[1].append(round(r["total_ms"], 3))
        cols[2].append(r["calls"])
    return out
