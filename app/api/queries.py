"""Query statistics: per-instance and fleet-wide top statements from the stored interval deltas."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from app.api import errors
from app.api.deps import StoreDep, ViewerDep
from app.api.params import InstanceName, Since, Until, StrictJsonRoute

router = APIRouter(prefix="/api/v1", tags=["queries"], route_class=StrictJsonRoute)

ORDER = {"total_time": "total_ms", "mean_time": "mean_ms", "calls": "calls", "rows": "rows",
         "io": "shared_blks_read + temp_blks_written"}
Order = Literal["total_time", "mean_time", "calls", "rows", "io"]

_TOP = """
with agg as (
  select s.instance_id, s.query_id, sum(s.calls)::bigint as calls, sum(s.total_ms) as total_ms,
         sum(s.rows)::bigint as rows, sum(s.shared_blks_hit)::bigint as shared_blks_hit,
         sum(s.shared_blks_read)::bigint as shared_blks_read, sum(s.temp_blks_written)::bigint as temp_blks_written
  from query_stats s join instances i on i.id = s.instance_id
  where s.ts >= $1 and s.ts < $2 and ($3::text is null or i.name = $3)
  group by 1, 2
)
select i.name as instance, a.query_id, a.calls, round(a.total_ms::numeric, 3)::float as total_ms,
       round((a.total_ms / nullif(a.calls, 0))::numeric, 3)::float as mean_ms, a.rows,
       a.shared_blks_hit, a.shared_blks_read, a.temp_blks_written, left(t.text, 2000) as query
from agg a join instances i on i.id = a.instance_id
left join query_texts t on t.instance_id = a.instance_id and t.query_id = a.query_id
order by {order} desc nulls last, a.query_id
limit $4
"""


class QueryStatOut(BaseModel):
    """One statement's totals over the window (interval deltas summed)."""

    instance: str
    query_id: str
    calls: int
    total_ms: float
    mean_ms: float | None
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    temp_blks_written: int
    query: str | None


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(timezone.utc)
    since = since or until - timedelta(hours=1)
    if since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since: must be before until")
    return since, until


async def _top(store, instance: str | None, since, until, order: Order, limit: int) -> list[dict[str, Any]]:
    since, until = _window(since, until)
    async with store.raw() as conn:
        if instance is not None and not await conn.fetchval("select 1 from instances where name = $1", instance):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no instance named {instance!r}")
        # ORDER is a fixed mapping of allowed names: nothing from the request reaches the SQL text.
        rows = await conn.fetch(_TOP.format(order=ORDER[order]), since, until, instance, limit)
    return [dict(r) for r in rows]


@router.get("/instances/{name}/queries", response_model=list[QueryStatOut],
            responses=errors.VIEWER | errors.responses(404))
async def instance_queries(name: InstanceName, store: StoreDep, _: ViewerDep, since: Since = None,
                           until: Until = None, order: Order = "total_time",
                           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    return await _top(store, name, since, until, order, limit)


@router.get("/queries/top", response_model=list[QueryStatOut], responses=errors.VIEWER)
async def fleet_top_queries(store: StoreDep, _: ViewerDep, since: Since = None,
                            until: Until = None, order: Order = "total_time",
                            limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    """The fleet's heaviest statements, per instance and query."""
    return await _top(store, None, since, until, order, limit)
