"""Collector runs (one row per instance per collector run) and sweeps on demand.

A sweep asked for here is rows in the store: the request and one item per selected instance.
The worker whose shard owns an instance claims its item and runs it (app/sweep_requests.py);
this process runs no collectors and never imports the sweeper.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import errors
from app.api.deps import OperatorDep, SessionDep, StoreDep, ViewerDep
from app.api.params import (NAME_PATTERN, TAG_PATTERN, WORD_PATTERN, InstanceFilter, Since, StrictJsonRoute, SweepId,
                            WordFilter)
from app.db import Store
from app.inventory.store import filtered, parse_tag_selectors
from app.models import AuditLog, CollectorRun, Instance, SweepRequest, SweepRequestItem
from collectors.registry import collector_names

router = APIRouter(prefix="/api/v1", tags=["runs"], route_class=StrictJsonRoute)


class RunOut(BaseModel):
    id: int
    instance: str
    collector: str
    started_at: datetime
    duration_ms: float
    status: Literal["ok", "error", "timeout", "skipped"]
    error: str | None
    findings: int = Field(description="findings the run reported")


@router.get("/runs", response_model=list[RunOut], responses=errors.VIEWER)
async def list_runs(session: SessionDep, _: ViewerDep, instance: InstanceFilter = None, collector: WordFilter = None,
                    status_: Annotated[Literal["ok", "error", "timeout", "skipped"] | None, Query(alias="status")] = None,
                    since: Since = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    return await recent_runs(session, instance, collector, status_, since, limit)


async def recent_runs(session: AsyncSession, instance: str | None = None, collector: str | None = None,
                      status_: str | None = None, since: datetime | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
    """Collector runs newest first, for the API and the console's instance page."""
    stmt = select(CollectorRun, Instance.name).join(Instance).order_by(CollectorRun.id.desc()).limit(limit)
    if instance:
        stmt = stmt.where(Instance.name == instance)
    if collector:
        stmt = stmt.where(CollectorRun.collector == collector)
    if status_:
        stmt = stmt.where(CollectorRun.status == status_)
    if since:
        stmt = stmt.where(CollectorRun.started_at >= since)
    return [{"id": r.id, "instance": name, "collector": r.collector, "started_at": r.started_at.isoformat(),
             "duration_ms": round(r.duration_ms, 2), "status": r.status, "error": r.error, "findings": r.findings}
            for r, name in (await session.execute(stmt)).all()]


SweepStatus = Literal["queued", "running", "done", "failed", "cancelled"]
ITEM_STATUSES: tuple[str, ...] = get_args(SweepStatus)
WAIT_MAX_S = 30.0


class SweepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collectors: list[Annotated[str, StringConstraints(pattern=WORD_PATTERN)]] | None = Field(
        None, max_length=100, description="collector names; all when omitted")
    instances: list[Annotated[str, StringConstraints(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=10_000, description="instance names; all when empty")
    tags: list[Annotated[str, StringConstraints(pattern=TAG_PATTERN, max_length=500)]] = Field(
        default_factory=list, max_length=100, description="key=value selectors")
    wait: bool = Field(False, description="hold the response until the workers finish the sweep or wait_s "
                                          "passes, then return its state")
    wait_s: float = Field(WAIT_MAX_S, gt=0, le=WAIT_MAX_S, description="how long `wait` holds the response")


class SweepSelector(BaseModel):
    instances: list[str] = []
    tags: list[str] = []


class ItemCounts(BaseModel):
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0


class SweepOut(BaseModel):
    id: int
    status: SweepStatus = Field(description="queued until a worker starts it, running until every instance "
                                            "is finished; then failed if any instance failed, else done "
                                            "(cancelled if any was cancelled)")
    requested_by: str
    requested_at: datetime
    finished_at: datetime | None
    collectors: list[str] | None
    selector: SweepSelector
    items: int = Field(description="instances the sweep covers")
    counts: ItemCounts = Field(description="instances per status")
    links: dict[str, str]


class SweepItemOut(BaseModel):
    instance: str
    status: SweepStatus
    attempts: int = Field(description="claims so far (more than one: a worker died or its collectors were busy)")
    claimed_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    ok: int | None = Field(description="collector runs that succeeded")
    failed: int | None
    skipped: int | None
    error: str | None


class SweepDetail(SweepOut):
    results: list[SweepItemOut]


def sweep_status(c: ItemCounts) -> SweepStatus:
    finished = c.done + c.failed + c.cancelled
    if c.running or (c.queued and finished):
        return "running"
    if c.queued:
        return "queued"
    return "failed" if c.failed else "cancelled" if c.cancelled else "done"


def _summaries():
    i = SweepRequestItem
    counts = [func.count(i.id).filter(i.status == s).label(s) for s in ITEM_STATUSES]
    return (select(SweepRequest, func.max(i.finished_at).label("last_finished"), *counts)
            .outerjoin(i, i.request_id == SweepRequest.id).group_by(SweepRequest.id))


def _sweep_out(row) -> SweepOut:
    r: SweepRequest = row.SweepRequest
    counts = ItemCounts(**{s: getattr(row, s) for s in ITEM_STATUSES})
    state = sweep_status(counts)
    return SweepOut(id=r.id, status=state, requested_by=r.requested_by, requested_at=r.requested_at,
                    finished_at=None if state in ("queued", "running") else row.last_finished,
                    collectors=r.collectors, selector=SweepSelector(**r.selector),
                    items=sum(counts.model_dump().values()), counts=counts, links={"self": f"/api/v1/sweeps/{r.id}"})


async def _load(session: AsyncSession, sweep_id: int) -> SweepOut:
    row = (await session.execute(_summaries().where(SweepRequest.id == sweep_id))).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no sweep {sweep_id}")
    return _sweep_out(row)


def _check_collectors(names: list[str] | None) -> None:
    unknown = sorted(set(names or []) - set(collector_names()))
    if unknown:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"collectors: unknown {', '.join(unknown)}; known: {', '.join(collector_names())}")


async def _check_names(session: AsyncSession, names: list[str]) -> None:
    """Every named instance must be in the inventory and enabled: a typo is not a smaller sweep."""
    found = {name: enabled for name, enabled in await session.execute(select(Instance.name, Instance.enabled).where(
        Instance.name.in_(names), Instance.gone_at.is_(None)))}
    if unknown := sorted(set(names) - set(found)):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"instances: unknown {', '.join(unknown)}")
    if disabled := sorted(n for n, enabled in found.items() if not enabled):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"instances: disabled {', '.join(disabled)} (enable them to sweep them)")


async def _selected_ids(session: AsyncSession, body: SweepIn) -> list[int]:
    """The selector expanded to instance ids now, so each worker knows which items are its own."""
    try:
        tags = parse_tag_selectors(body.tags)
    except ValueError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"tags: {e}") from None
    if body.instances:
        await _check_names(session, body.instances)
    stmt = filtered(select(Instance.id), tags=tags, enabled=True).where(Instance.gone_at.is_(None))
    if body.instances:
        stmt = stmt.where(Instance.name.in_(body.instances))
    ids = list((await session.execute(stmt.order_by(Instance.id))).scalars())
    if not ids and body.tags:
        among = " among the named instances" if body.instances else ""
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"tags: no enabled instance{among} matches {', '.join(body.tags)}")
    if not ids:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "instances: the inventory has no enabled instance")
    return ids


async def _wait_until_finished(store: Store, sweep_id: int, timeout_s: float) -> None:
    """Poll the store (the workers do the work) until no item is queued or running, or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = select(func.count()).where(SweepRequestItem.request_id == sweep_id,
                                         SweepRequestItem.status.in_(("queued", "running")))
    while True:
        async with store.sessions() as session:
            if not await session.scalar(pending):
                return
        left = deadline - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(0.25, left))


@router.post("/sweeps", status_code=status.HTTP_202_ACCEPTED, response_model=SweepOut, responses=errors.OPERATOR)
async def request_sweep(body: SweepIn, session: SessionDep, store: StoreDep, who: OperatorDep,
                        response: Response) -> SweepOut:
    """Queue a sweep for the workers that own the selected instances; `wait` holds the answer."""
    _check_collectors(body.collectors)
    ids = await _selected_ids(session, body)
    selector = {"instances": body.instances, "tags": body.tags}
    req = SweepRequest(requested_by=who.name, collectors=body.collectors, selector=selector)
    session.add(req)
    await session.flush()
    await session.execute(insert(SweepRequestItem), [{"request_id": req.id, "instance_id": i} for i in ids])
    session.add(AuditLog(actor=who.name, action="sweep.request", target=f"sweep {req.id}",
                         details={"collectors": body.collectors, "selector": selector, "items": len(ids)}))
    # Committed now rather than when the route returns: the workers must see the rows while we
    # wait, and the caller's API-key row (last_used_at) must not stay locked meanwhile.
    await session.commit()
    response.headers["Location"] = f"/api/v1/sweeps/{req.id}"
    if body.wait:
        await _wait_until_finished(store, req.id, body.wait_s)
    async with store.sessions() as fresh:
        return await _load(fresh, req.id)


@router.get("/sweeps", response_model=list[SweepOut], responses=errors.VIEWER)
async def list_sweeps(session: SessionDep, _: ViewerDep,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[SweepOut]:
    rows = (await session.execute(_summaries().order_by(SweepRequest.id.desc()).limit(limit))).all()
    return [_sweep_out(r) for r in rows]


@router.get("/sweeps/{sweep_id:int}", response_model=SweepDetail, responses=errors.VIEWER | errors.responses(404))
async def get_sweep(sweep_id: SweepId, session: SessionDep, _: ViewerDep) -> SweepDetail:
    """The sweep's status and each instance's result, as far as the workers have got."""
    out = await _load(session, sweep_id)
    i = SweepRequestItem
    rows = (await session.execute(
        select(i, Instance.name).join(Instance, Instance.id == i.instance_id)
        .where(i.request_id == sweep_id).order_by(Instance.name))).all()
    results = [SweepItemOut(instance=name, status=it.status, attempts=it.attempts, claimed_by=it.claimed_by,
                            started_at=it.claimed_at, finished_at=it.finished_at, ok=it.ok, failed=it.failed,
                            skipped=it.skipped, error=it.error) for it, name in rows]
    return SweepDetail(**out.model_dump(), results=results)


@router.post("/sweeps/{sweep_id:int}:cancel", response_model=SweepOut,
             responses=errors.OPERATOR | errors.responses(404, 409))
async def cancel_sweep(sweep_id: SweepId, session: SessionDep, who: OperatorDep) -> SweepOut:
    """Cancel the instances no worker has started; those running finish."""
    await _load(session, sweep_id)
    i = SweepRequestItem
    cancelled = (await session.execute(
        update(i).where(i.request_id == sweep_id, i.status == "queued")
        .values(status="cancelled", finished_at=func.now()).returning(i.id))).scalars().all()
    if not cancelled:
        raise HTTPException(status.HTTP_409_CONFLICT, f"sweep {sweep_id} has no queued instance left to cancel")
    session.add(AuditLog(actor=who.name, action="sweep.cancel", target=f"sweep {sweep_id}",
                         details={"cancelled": len(cancelled)}))
    return await _load(session, sweep_id)
