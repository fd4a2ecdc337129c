"""The fleet's replication: current lag per standby/replica from stored samples, and the detected topology."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api import errors
from app.api.params import StrictJsonRoute
from app.api.deps import StoreDep, ViewerDep
from app.topology import Topology, members_json

router = APIRouter(prefix="/api/v1", tags=["replication"], route_class=StrictJsonRoute)

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


class LagOut(BaseModel):
    instance: str
    engine: str
    standby: str = Field(description="the standby or replica, as the primary names it")
    lag_seconds: float | None
    lag_bytes: float | None
    observed_at: str = Field(description="when the sample was taken (RFC 3339)")


@router.get("/replication", response_model=list[LagOut], responses=errors.VIEWER)
async def replication(store: StoreDep, _: ViewerDep) -> list[dict[str, Any]]:
    """Each standby/replica's latest lag (seconds and bytes), worst first."""
    return await latest_lag(store)


class TopologyMember(BaseModel):
    instance: str
    role: str | None = Field(description="primary or standby, as the server said on its last run; null: never read")
    server_id: str | None = Field(description="PostgreSQL system_identifier, MySQL server_uuid")
    database: str | None
    replication_set: str | None = Field(description="the root primary of the instance's replication set")
    upstream: str | None = Field(description="the inventory instance this standby streams from")
    upstream_address: str | None = Field(description="host:port the standby's WAL receiver or replica thread uses")
    streaming: bool | None
    reachable: bool
    checked_at: str | None


@router.get("/topology", response_model=list[TopologyMember], responses=errors.VIEWER)
async def topology(store: StoreDep, _: ViewerDep) -> list[dict[str, Any]]:
    """Replication sets as detected on every run: each instance's role, upstream and set, no tags needed."""
    async with store.raw() as conn:
        return members_json(await Topology.load(conn))
