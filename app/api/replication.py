"""The fleet's current replication lag, per instance and standby/replica, from stored samples."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import StoreDep, ViewerDep

router = APIRouter(prefix="/api/v1", tags=["replication"])

LATEST_LAG = """
select distinct on (s.instance_id, s.object, s.metric)
       i.name as instance, i.engine, s.object as standby, s.metric, s.value, s.ts
from samples s join instances i on i.id = s.instance_id
where s.metric in ('replication_lag_seconds', 'replication_lag_bytes') and s.ts > now() - interval '1 hour'
order by s.instance_id, s.object, s.metric, s.ts desc
"""


async def latest_lag(store) -> list[dict[str, Any]]:
    async with store.raw() as conn:
        rows = await conn.fetch(LATEST_LAG)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        item = merged.setdefault((r["instance"], r["standby"]), {
            "instance": r["instance"], "engine": r["engine"], "standby": r["standby"],
            "lag_seconds": None, "lag_bytes": None, "observed_at": r["ts"].isoformat()})
        item["lag_seconds" if r["metric"] == "replication_lag_seconds" else "lag_bytes"] = r["value"]
    return sorted(merged.values(), key=lambda x: -(x["lag_seconds"] or 0))


@router.get("/replication")
async def replication(store: StoreDep, _: ViewerDep) -> list[dict[str, Any]]:
    """Each standby/replica's latest lag (seconds and bytes), worst first."""
    return await latest_lag(store)
