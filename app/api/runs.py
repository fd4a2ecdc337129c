"""Collector runs (one row per instance per collector run) and sweeps on demand."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from app.api.deps import OperatorDep, SessionDep, ViewerDep
from app.inventory.store import parse_tag_selectors
from app.models import CollectorRun, Instance
from app.sweep import Selector, Sweeper
from collectors.registry import collector_names

router = APIRouter(prefix="/api/v1", tags=["runs"])


@router.get("/runs")
async def list_runs(session: SessionDep, _: ViewerDep, instance: str | None = None, collector: str | None = None,
                    status_: Annotated[str | None, Query(alias="status", pattern="^(ok|error|timeout|skipped)$")] = None,
                    since: datetime | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
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


class SweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collectors: list[str] | None = Field(None, description="collector names; all when omitted")
    instances: list[str] = Field(default_factory=list, description="instance names; all when empty")
    tags: list[str] = Field(default_factory=list, description="key=value selectors")
    wait: bool = Field(True, description="wait for the sweep and return its summary")


def _sweeper(request: Request) -> Sweeper:
    app = request.app
    if getattr(app.state, "sweeper", None) is None:
        app.state.sweeper = Sweeper(app.state.store, app.state.settings)
    return app.state.sweeper


@router.post("/sweeps")
async def run_sweep(body: SweepRequest, request: Request, _: OperatorDep) -> dict[str, Any]:
    unknown = sorted(set(body.collectors or []) - set(collector_names()))
    if unknown:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"collectors: unknown {', '.join(unknown)}; known: {', '.join(collector_names())}")
    try:
        tags = tuple(parse_tag_selectors(body.tags).items())
    except ValueError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"tags: {e}") from None
    sweep = _sweeper(request).sweep(body.collectors, Selector(names=tuple(body.instances), tags=tags))
    if not body.wait:
        task = asyncio.create_task(sweep)
        request.app.state.background.add(task)
        task.add_done_callback(request.app.state.background.discard)
        return {"status": "started"}
    summary = await sweep
    return {"status": "done", **summary.as_json(), "errors": summary.errors}
