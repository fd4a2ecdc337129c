"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from app import telemetry
from app.api.deps import StoreDep
from app.api.replication import latest_lag
from app.db import StoreNotReady

router = APIRouter(tags=["health"])


class Alive(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    reason: str | None = Field(None, description="why the store is not ready (unreachable, not migrated)")


@router.get("/healthz", response_model=Alive)
async def healthz() -> Alive:
    return Alive()


@router.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
            responses={503: {"model": Readiness, "description": "the store is unreachable or not migrated"}})
async def readyz(store: StoreDep) -> Readiness | JSONResponse:
    try:
        await store.check_ready()
    except StoreNotReady as e:
        return JSONResponse(Readiness(status="not ready", reason=str(e)).model_dump(), status_code=503)
    return Readiness(status="ready")


async def refresh_fleet_gauges(store) -> None:
    """Fleet gauges are read from the store at scrape time, so every API replica agrees."""
    async with store.raw() as conn:
        findings = await conn.fetch(
            "select severity, \"check\", count(*) as n from findings where state <> 'resolved' group by 1, 2")
        engines = await conn.fetch("select engine, count(*) as n from instances where gone_at is null group by 1")
        pending = await conn.fetchval("select count(*) from outbox where processed_at is null")
        up = await conn.fetch(
            "select i.name, i.engine, not exists(select 1 from findings f where f.instance_id = i.id "
            "and f.collector = 'connectivity' and f.state <> 'resolved') as up "
            "from instances i where i.enabled and i.gone_at is null")
    lag = await latest_lag(store)
    telemetry.FINDINGS_OPEN.clear()
    for r in findings:
        telemetry.FINDINGS_OPEN.labels(r["severity"], r["check"]).set(r["n"])
    telemetry.INSTANCES.clear()
    for r in engines:
        telemetry.INSTANCES.labels(r["engine"]).set(r["n"])
    telemetry.OUTBOX_PENDING.set(pending)
    telemetry.INSTANCE_UP.clear()
    for r in up:
        telemetry.INSTANCE_UP.labels(r["name"], r["engine"]).set(1 if r["up"] else 0)
    telemetry.REPLICATION_LAG.clear()
    for item in lag:
        if item["lag_seconds"] is not None:
            telemetry.REPLICATION_LAG.labels(item["instance"], item["standby"]).set(item["lag_seconds"])


@router.get("/metrics", include_in_schema=False)
async def metrics(store: StoreDep) -> Response:
    await refresh_fleet_gauges(store)
    return Response(generate_latest(telemetry.REGISTRY), media_type=CONTENT_TYPE_LATEST)
