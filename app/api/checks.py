"""Data quality checks: list, create, read, replace, delete (operator to change, viewer to read), and the
freshness of every table by source system (GET /api/v1/freshness)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, Field

from app.api import errors
from app.api.deps import OperatorDep, SettingsDep, StoreDep, ViewerDep
from app.api.errors import ApiError
from app.api.params import StrictJsonRoute
from app.db import Store
from app.quality.definitions import delete_check, validate_sql
from app.quality.freshness import freshness_by_source
from app.quality.refusals import define_checks
from app.settings import Settings
from collectors.quality.checks import KINDS, NAME_PATTERN, Check
from collectors.quality.sql import CheckRefused

router = APIRouter(prefix="/api/v1", tags=["checks"], route_class=StrictJsonRoute)
CheckName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=56, description="the check's name")]


class CheckResult(BaseModel):
    instance: str
    object: str = Field(description="schema.table, or the check's name for an instance-wide check")
    state: str = Field(description="pass, warn, error, or failed (the check could not run)")
    value: float | None = Field(None, description="lag seconds, rows per period, NULL share, violations, changes")
    ran_at: datetime


class CheckOut(BaseModel):
    name: str
    kind: str
    origin: str = Field(description="api, config or dbt")
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    definition: dict[str, Any]
    results: list[CheckResult] = Field(default_factory=list, description="the latest result per instance and table")
    unverified: list[str] = Field(default_factory=list,
                                  description="instances whose plan could not be read when it was defined")


class TableFreshness(BaseModel):
    check: str
    instance: str
    table_name: str
    state: str
    lag_seconds: float | None
    sla_seconds: float | None
    newest: str | None = Field(None, description="the newest load time seen")
    ran_at: datetime
    pipeline: str | None = None


class SourceFreshness(BaseModel):
    source: str = Field(description="the check's source label, else the instance's source tag ('' for none)")
    state: str = Field(description="the worst state of its tables")
    tables: list[TableFreshness]


_COLUMNS = "q.id, q.name, q.kind, q.origin, q.enabled, q.created_by, q.created_at, q.updated_at, q.definition"


async def _results(conn, check_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        "select i.name as instance, r.object, r.state, r.value, r.ran_at from quality_check_results r "
        "join instances i on i.id = r.instance_id where r.check_id = $1 order by i.name, r.object", check_id)]


@router.get("/checks", response_model=list[CheckOut], responses=errors.VIEWER)
async def list_checks(store: StoreDep, who: ViewerDep,
                      kind: Annotated[str | None, Query(pattern=f"^({'|'.join(KINDS)})$")] = None,
                      origin: Annotated[str | None, Query(pattern="^(api|config|dbt)$")] = None) -> list[dict[str, Any]]:
    async with store.raw() as conn:
        rows = await conn.fetch(f"select {_COLUMNS} from quality_checks q where ($1::text is null or kind = $1) "
                                "and ($2::text is null or origin = $2) order by name", kind, origin)
    return [dict(r) for r in rows]


@router.post("/checks", status_code=status.HTTP_201_CREATED, response_model=CheckOut,
             responses=errors.OPERATOR | errors.responses(409))
async def create_check(body: Check, store: StoreDep, settings: SettingsDep, who: OperatorDep) -> dict[str, Any]:
    """Define a check. A freshness, volume, completeness or assertion check whose statement would scan
    a large table in full is refused (409, naming the table and, where one column would fix it, the
    CREATE INDEX to add) unless allow_scan is true."""
    _validated(body)
    async with store.raw() as conn:
        if await conn.fetchval("select 1 from quality_checks where name = $1", body.name):
            raise ApiError(409, f"a check named {body.name!r} exists; PUT /api/v1/checks/{body.name} replaces it")
    return await _define(body, store, settings, who.name, "check.create")


@router.put("/checks/{name}", response_model=CheckOut,
            responses=errors.OPERATOR | errors.responses(404, 409))
async def replace_check(name: CheckName, body: Check, store: StoreDep, settings: SettingsDep,
                        who: OperatorDep) -> dict[str, Any]:
    """Replace a check defined through the API, through the same scan review as a new one; it starts
    over (results and schema baseline). A check from the config file or a dbt import is changed
    there: the next start would put that definition back."""
    if body.name != name:
        raise ApiError(422, f"the body names check {body.name!r}, the path {name!r}",
                       [{"loc": ["body", "name"], "msg": "must equal the check's name in the path",
                         "type": "value_error"}])
    _validated(body)
    async with store.raw() as conn:
        origin = await conn.fetchval("select origin from quality_checks where name = $1", name)
    if origin is None:
        raise ApiError(404, f"no check named {name!r}; POST /api/v1/checks defines one")
    if origin != "api":
        raise ApiError(409, f"check {name!r} comes from the {origin} definitions; change it there")
    return await _define(body, store, settings, who.name, "check.replace")


def _validated(body: Check) -> None:
    try:
        validate_sql(body)
    except CheckRefused as e:
        raise ApiError(422, str(e), [{"loc": ["body"], "msg": str(e), "type": "sql_refused"}]) from None


async def _define(body: Check, store: Store, settings: Settings, actor: str, action: str) -> dict[str, Any]:
    """Review the check's scans, store it (or refuse it whole, 409), audit, and return it."""
    defined = await define_checks(store, settings, [body], "api", actor)
    if defined.refused:
        # The field a DBA changes to make the check cheap: the timestamp column, the assertion's
        # query, or the check as a whole (a window, or allow_scan).
        fields = {"freshness": ("loaded_at_field", "loaded_at_query"), "volume": ("loaded_at_field",),
                  "assertion": ("query",)}.get(body.kind, ())
        loc = ["body", *[f for f in fields if getattr(body, f, None)][:1]]
        raise ApiError(409, defined.refused[0], [{"loc": loc, "msg": m, "type": "scan_refused"}
                                                 for m in defined.refused])
    async with store.raw() as conn:
        await conn.execute("insert into audit_log (actor, action, target, details, outcome) values ($1, $2, $3, $4, 'ok')",
                           actor, action, body.name, json.dumps({"kind": body.kind, "unverified": defined.unverified}))
        row = await conn.fetchrow(f"select {_COLUMNS} from quality_checks q where name = $1", body.name)
    return {**dict(row), "unverified": defined.unverified}


@router.get("/checks/{name}", response_model=CheckOut, responses=errors.VIEWER | errors.responses(404))
async def get_check(name: CheckName, store: StoreDep, who: ViewerDep) -> dict[str, Any]:
    async with store.raw() as conn:
        row = await conn.fetchrow(f"select {_COLUMNS} from quality_checks q where name = $1", name)
        if row is None:
            raise ApiError(404, f"no check named {name!r}")
        return {**dict(row), "results": await _results(conn, row["id"])}


@router.delete("/checks/{name}", response_model=CheckOut, responses=errors.OPERATOR | errors.responses(404))
async def remove_check(name: CheckName, store: StoreDep, who: OperatorDep) -> dict[str, Any]:
    """Delete a check; the findings it had open resolve (and their alerts with them)."""
    async with store.raw() as conn:
        row = await conn.fetchrow(f"select {_COLUMNS} from quality_checks q where name = $1", name)
        if row is None or not await delete_check(conn, name):
            raise ApiError(404, f"no check named {name!r}")
        await conn.execute("insert into audit_log (actor, action, target, details, outcome) values ($1, 'check.delete', $2, "
                           "'{}', 'ok')", who.name, name)
    return dict(row)


@router.get("/freshness", response_model=list[SourceFreshness], responses=errors.VIEWER)
async def freshness(store: StoreDep, who: ViewerDep,
                    source: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$",
                                                        description="only this source system")] = None
                    ) -> list[dict[str, Any]]:
    """Per source system and table: the lag of the newest row, the SLA, and pass / warn / error."""
    async with store.raw() as conn:
        return await freshness_by_source(conn, source)
