"""Partition maintenance routes: the plan (anyone who can read) and apply (admins).

Apply runs only what a configured policy names; the rest comes back as `planned_only`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from app.api import errors
from app.api.deps import AdminDep, SessionDep, SettingsDep, ViewerDep
from app.api.instances import _get
from app.api.params import OptionalBody, InstanceName, TableName, StrictJsonRoute
from app.models import Instance
from app.partitions import PolicyError, apply_for, outcome_json, plan_for, policy_covers, statement_json
from app.settings import Settings
from collectors.common.maintenance import PlanRefused  # every engine's "not a table I maintain" / bad policy
from collectors.engines.base import ConnectFailed

router = APIRouter(prefix="/api/v1", tags=["partitions"], route_class=StrictJsonRoute)

# What planning or applying refuses with a message for the DBA (the console shows the same ones).
# OSError and UnicodeError come from the driver's connect: a refused socket, or a host name no
# resolver takes (a DNS label over 63 characters fails in the idna codec); TimeoutError is the
# statement timeout.
UNREACHABLE_ERRORS = (ConnectFailed, OSError, UnicodeError)
PARTITION_ERRORS = (PolicyError, PlanRefused, *UNREACHABLE_ERRORS)


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: TableName | None = Field(None, description="schema.table; all tables with a policy when omitted")
    lock_timeout_ms: int = Field(2000, ge=10, le=60_000)


class PlannedStatementOut(BaseModel):
    action: str = Field(description="create, detach, drop, ...")
    table: str
    partition: str | None
    sql: str
    why: str
    applies: bool = Field(description="false: no configured policy names the table, so apply leaves it alone")


class PlanOut(BaseModel):
    instance: str
    dry_run: bool
    statements: list[PlannedStatementOut]


class OutcomeOut(BaseModel):
    action: str
    table: str
    partition: str | None
    sql: str
    why: str
    status: Literal["ok", "skipped", "refused", "failed", "planned_only"]
    message: str | None


class ApplyOut(BaseModel):
    instance: str
    outcomes: list[OutcomeOut]


# A plan or apply reads the monitored database now: 502 when it cannot be reached (the reason in detail).
PARTITION_RESPONSES = errors.responses(404, 502, 504)


def _refuse(e: Exception, name: str) -> HTTPException:
    if isinstance(e, TimeoutError):
        return HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, f"{name} did not answer in time: {e or 'timeout'}")
    if isinstance(e, UNREACHABLE_ERRORS):
        return HTTPException(status.HTTP_502_BAD_GATEWAY, f"{name} is unreachable: {e}")
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e))


@router.get("/instances/{name}/partitions/plan", response_model=PlanOut,
            responses=errors.VIEWER | PARTITION_RESPONSES)
async def partition_plan(name: InstanceName, session: SessionDep, settings: SettingsDep, _: ViewerDep,
                         table: Annotated[TableName | None, Query(description="schema.table; all when omitted")] = None,
                         ) -> dict[str, Any]:
    inst = await _get(session, name)
    try:
        statements = await planned_statements(settings, inst, table)
    except PARTITION_ERRORS as e:
        raise _refuse(e, name) from None
    return {"instance": name, "dry_run": True, "statements": statements}


async def planned_statements(settings: Settings, inst: Instance, table: str | None) -> list[dict[str, Any]]:
    """The dry-run plan as the API and the console show it; raises one of PARTITION_ERRORS."""
    statements = await plan_for(settings, inst, table)
    covered = policy_covers(settings, inst)
    # `applies: false` marks a table no configured policy names: apply leaves it alone.
    return [{**statement_json(s), "applies": covered(s)} for s in statements]


@router.post("/instances/{name}/partitions:apply", response_model=ApplyOut,
             responses=errors.ADMIN | PARTITION_RESPONSES)
async def partition_apply(name: InstanceName, session: SessionDep, settings: SettingsDep, who: AdminDep,
                          body: OptionalBody[ApplyRequest] = None) -> dict[str, Any]:
    body = body or ApplyRequest()
    inst = await _get(session, name)
    try:
        outcomes = await apply_for(session, settings, inst, who.name, body.table, body.lock_timeout_ms)
    except PARTITION_ERRORS as e:
        raise _refuse(e, name) from None
    return {"instance": name, "outcomes": [outcome_json(o) for o in outcomes]}
