"""Partition maintenance routes: the plan (anyone who can read) and apply (admins).

Apply runs only what a configured policy names; the rest comes back as `planned_only`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import AdminDep, SessionDep, SettingsDep, ViewerDep
from app.api.instances import _get
from app.models import Instance
from app.partitions import PolicyError, apply_for, outcome_json, plan_for, policy_covers, statement_json
from app.settings import Settings
from collectors.common.maintenance import PlanRefused  # every engine's "not a table I maintain" / bad policy
from collectors.engines.base import ConnectFailed

router = APIRouter(prefix="/api/v1", tags=["partitions"])

# What planning or applying refuses with a message for the DBA (the console shows the same ones).
PARTITION_ERRORS = (PolicyError, PlanRefused, ConnectFailed)


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
        statements = await planned_statements(settings, inst, table)
    except PARTITION_ERRORS as e:
        raise _refuse(e) from None
    return {"instance": name, "dry_run": True, "statements": statements}


async def planned_statements(settings: Settings, inst: Instance, table: str | None) -> list[dict[str, Any]]:
    """The dry-run plan as the API and the console show it; raises one of PARTITION_ERRORS."""
    statements = await plan_for(settings, inst, table)
    covered = policy_covers(settings, inst)
    # `applies: false` marks a table no configured policy names: apply leaves it alone.
    return [{**statement_json(s), "applies": covered(s)} for s in statements]


@router.post("/instances/{name}/partitions:apply")
async def partition_apply(name: str, session: SessionDep, settings: SettingsDep, who: AdminDep,
                          body: ApplyRequest | None = None) -> dict[str, Any]:
    body = body or ApplyRequest()
    inst = await _get(session, name)
    try:
        outcomes = await apply_for(session, settings, inst, who.name, body.table, body.lock_timeout_ms)
    except PARTITION_ERRORS as e:
        raise _refuse(e) from None
    return {"instance": name, "outcomes": [outcome_json(o) for o in outcomes]}
