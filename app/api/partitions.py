"""Partition maintenance routes: the plan (anyone who can read) and apply (admins).

Apply runs only what a configured policy names; the rest comes back as `planned_only`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import AdminDep, SessionDep, SettingsDep, ViewerDep
from app.api.instances import _get
from app.partitions import PolicyError, apply_for, outcome_json, plan_for, policy_covers, statement_json
from collectors.engines.base import ConnectFailed
from collectors.mysql.partition_plan import NotRangePartitioned
from collectors.postgres.partitions import NotPartitioned
from collectors.sqlserver.partition_apply import PlanRefused  # SQL Server's and Oracle's

router = APIRouter(prefix="/api/v1", tags=["partitions"])


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: str | None = Field(None, description="schema.table; all tables with a policy when omitted")
    lock_timeout_ms: int = Field(2000, ge=10, le=60_000)


def _refuse(e: Exception) -> HTTPException:
    if isinstance(e, ConnectFailed):
        return HTTPException(status.HTTP_502_BAD_GATEWAY, str(e))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e))


@router.get("/instances/{name}/partitions/plan")
async def partition_plan(name: str, session: SessionDep, settings: SettingsDep, _: ViewerDep,
                         table: str | None = None) -> dict[str, Any]:
    inst = await _get(session, name)
    try:
        statements = await plan_for(settings, inst, table)
        covered = policy_covers(settings, inst)
    except (PolicyError, NotPartitioned, NotRangePartitioned, PlanRefused, ConnectFailed) as e:
        raise _refuse(e) from None
    # `applies: false` marks a table no configured policy names: apply leaves it alone.
    return {"instance": name, "dry_run": True,
            "statements": [{**statement_json(s), "applies": covered(s)} for s in statements]}


@router.post("/instances/{name}/partitions:apply")
async def partition_apply(name: str, session: SessionDep, settings: SettingsDep, who: AdminDep,
                          body: ApplyRequest | None = None) -> dict[str, Any]:
    body = body or ApplyRequest()
    inst = await _get(session, name)
    try:
        outcomes = await apply_for(session, settings, inst, who.name, body.table, body.lock_timeout_ms)
    except (PolicyError, NotPartitioned, NotRangePartitioned, PlanRefused, ConnectFailed) as e:
        raise _refuse(e) from None
    return {"instance": name, "outcomes": [outcome_json(o) for o in outcomes]}
