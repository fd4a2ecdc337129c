"""Live troubleshooting: sessions, lock trees, EXPLAIN, cancel/terminate, read from the monitored database now.

Every request opens its own short session (read-only unless it kills something), runs under the
worker's statement timeout, and is rate-limited per instance so a console left open cannot hammer
a database. Nothing here reads or writes the store's samples. What each engine does is its
activity module's LiveOps (collectors.common.live); this module never branches on engines.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import sqlglot
from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select
from sqlglot import exp

from app.api import errors
from app.api.params import InstanceName, SessionId, StrictJsonRoute
from app.api.deps import OperatorDep, SessionDep, SettingsDep, ViewerDep
from app.auth import Role
from app.inventory.targets import target_for
from app.models import AuditLog, Instance, QueryText
from app.settings import Settings
from collectors.common.blocking import cap_query, lock_trees
from collectors.common.live import (
    LiveOps,
    NotOnThisEngine,
    PlanRefused,
    is_statement_timeout,
    live_ops,
)
from collectors.engines.base import ConnectFailed, SessionLimits, Target, connect
from collectors.spec import Connection

router = APIRouter(prefix="/api/v1", tags=["live"], route_class=StrictJsonRoute)
# Every live route: no such instance (404), the per-instance rate limit (429), the database unreachable
# (502), its credential unavailable (503), the statement timeout reached (504).
RATE_LIMITED = {429: errors.responses(429)[429] | {"headers": {"Retry-After": {
    "description": "seconds until this instance takes another live request (live.min_interval_s)",
    "schema": {"type": "integer", "minimum": 1}}}}}
LIVE = errors.VIEWER | errors.responses(404) | RATE_LIMITED | errors.UNREACHABLE
UNPROCESSABLE = 422  # starlette renamed its constant (ENTITY -> CONTENT); the number stays
_last_request: dict[str, float] = {}
_PLANNED = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Into)


async def _instance(session: SessionDep, name: str) -> tuple[Instance, LiveOps]:
    inst = (await session.execute(select(Instance).where(Instance.name == name))).scalar_one_or_none()
    if inst is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no instance named {name!r}")
    if (ops := live_ops(inst.engine)) is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"live views are not available for {inst.engine}")
    return inst, ops


@asynccontextmanager
async def _database_errors(inst: Instance) -> AsyncIterator[None]:
    """What the monitored database did, as the status a client can act on."""
    try:
        yield
    except ConnectFailed as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{inst.name} is unreachable: {e}") from None
    except NotOnThisEngine as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{inst.engine}: {e}") from None
    except PlanRefused as e:
        raise HTTPException(UNPROCESSABLE, f"refused: {e}") from None
    except (OSError, UnicodeError) as e:  # a kill's own connection refused, or a host no resolver takes
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{inst.name} is unreachable: {e}") from None
    except Exception as e:
        if not is_statement_timeout(e):
            raise
        raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, f"{inst.name} did not answer within the statement "
                                                             "timeout (worker.statement_timeout_ms)") from None


def _throttle(name: str, settings: Settings) -> None:
    """At most one live request per instance per live.min_interval_s in this process."""
    now, last = time.monotonic(), _last_request.get(name)
    if last is not None and now - last < settings.live.min_interval_s:
        wait = settings.live.min_interval_s - (now - last)
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, f"one live request per "
                            f"{settings.live.min_interval_s:g} s per instance", headers={"Retry-After": str(max(1, round(wait)))})
    _last_request[name] = now


async def _target(inst: Instance, settings: Settings) -> Target:
    try:
        return await target_for(inst, settings)
    except Exception as e:  # a refused or missing credential is the instance's problem, not a 500
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"credential for {inst.name}: {e}") from None


@asynccontextmanager
async def _live(inst: Instance, settings: Settings) -> AsyncIterator[Connection]:
    """A fresh read-only session under the worker's timeouts; 502 with the reason if none opens."""
    _throttle(inst.name, settings)
    w = settings.worker
    target = await _target(inst, settings)
    async with _database_errors(inst):
        conn = await connect(target, SessionLimits(
            connect_timeout_s=w.connect_timeout_s, statement_timeout_ms=w.statement_timeout_ms,
            lock_timeout_ms=w.lock_timeout_ms, application_name="dbfleet-live"))
        try:
            yield conn
        finally:
            await conn.close()


class ActivityOut(BaseModel):
    instance: str
    sessions: list[dict[str, Any]] = Field(description="every session, as the activity collector reads it")


class LocksOut(BaseModel):
    instance: str
    trees: list[dict[str, Any]] = Field(description="nested lock trees, rooted at blockers that wait on nobody")


class ExplainOut(BaseModel):
    instance: str
    analyze: bool
    plan: Any = Field(description="the server's JSON plan")
    text: str = Field(description="the plan as text")


class KillOut(BaseModel):
    instance: str
    session_id: int
    action: Literal["cancel", "terminate"]
    done: bool


@router.get("/instances/{name}/activity", response_model=ActivityOut, responses=LIVE)
async def activity(name: InstanceName, session: SessionDep, settings: SettingsDep, _: ViewerDep) -> dict[str, Any]:
    """What every session on the instance is doing now."""
    inst, ops = await _instance(session, name)
    async with _live(inst, settings) as conn:
        return {"instance": name, "sessions": await ops.sessions(conn)}


@router.get("/instances/{name}/locks", response_model=LocksOut, responses=LIVE)
async def locks(name: InstanceName, session: SessionDep, settings: SettingsDep, _: ViewerDep) -> dict[str, Any]:
    """Who blocks whom now, as nested trees rooted at the sessions that block but wait on nobody."""
    inst, ops = await _instance(session, name)
    async with _live(inst, settings) as conn:
        return {"instance": name, "trees": lock_trees(await ops.sessions(conn))}


class ExplainIn(BaseModel):
    query: str | None = Field(None, max_length=100_000)
    queryid: str | None = Field(None, max_length=128)
    analyze: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> ExplainIn:
        if (self.query is None) == (self.queryid is None):
            raise ValueError("give exactly one of query or queryid")
        return self


def refusal(text: str, dialect: str) -> str | None:
    """Why a text is not one plain SELECT we may plan, or None (dialect: sqlglot's name for the engine's SQL)."""
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except sqlglot.errors.ParseError as e:
        return f"not parseable as {dialect} SQL: {str(e).splitlines()[0]}"
    if len(statements) != 1:
        return f"one statement only; this text has {len(statements)}"
    [stmt] = statements
    if not isinstance(stmt, _PLANNED):
        return f"only SELECT or WITH ... SELECT is planned; this is {stmt.key.upper()}"
    if (write := next(stmt.find_all(*_WRITES), None)) is not None:
        return f"it writes ({write.key.upper()}): only a read-only SELECT is planned"
    if stmt.find(exp.Lock) is not None:
        return "SELECT ... FOR UPDATE/SHARE takes row locks: plan it without the locking clause"
    return None


async def _query_text(session: SessionDep, inst: Instance, body: ExplainIn) -> str:
    if body.query is not None:
        return body.query
    text = (await session.execute(select(QueryText.text).where(
        QueryText.instance_id == inst.id, QueryText.query_id == body.queryid))).scalar_one_or_none()
    if text is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stored text for queryid {body.queryid} on {inst.name}")
    return text


@router.post("/instances/{name}/explain", response_model=ExplainOut, responses=LIVE | errors.responses(400, 403))
async def explain(name: InstanceName, body: ExplainIn, session: SessionDep, settings: SettingsDep,
                  principal: ViewerDep) -> dict[str, Any]:
    """The plan of one SELECT, never committed: PostgreSQL in a read-only transaction that is rolled back,
    MySQL EXPLAIN FORMAT=JSON, SQL Server SET SHOWPLAN_XML, Oracle EXPLAIN PLAN + DBMS_XPLAN (rolled back)."""
    inst, ops = await _instance(session, name)
    text = await _query_text(session, inst, body)
    if (why := refusal(ops.for_parsing(text), ops.dialect)) is not None:
        raise HTTPException(UNPROCESSABLE, f"refused: {why}")
    if body.analyze and not settings.live.allow_analyze:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "EXPLAIN ANALYZE runs the query; it is off "
                                                       "unless live.allow_analyze is set")
    if body.analyze and principal.role < Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "EXPLAIN ANALYZE needs the admin role")
    async with _live(inst, settings) as conn:
        plan = await ops.explain(conn, text, body.analyze)
    session.add(AuditLog(actor=principal.name, action="live.explain", target=name,
                         details={"query": cap_query(text), "queryid": body.queryid, "analyze": body.analyze}))
    return {"instance": name, "analyze": body.analyze, **plan}


class KillIn(BaseModel):
    started_at: datetime = Field(description="the session's started_at or query_start as /activity shows it "
                                             "(PostgreSQL backend_start/query_start; MySQL query_start, SQL Server "
                                             "login_time/start_time and Oracle logon_time/sql_exec_start, in server "
                                             "time): a reused id never matches")


async def _kill(inst: Instance, ops: LiveOps, settings: Settings, pid: int, started_at: datetime,
                terminate: bool) -> bool:
    """Kill on a writable session, only if the id still names the session started then."""
    target = await _target(inst, settings)
    async with _database_errors(inst):
        return await ops.kill(target, SessionLimits(connect_timeout_s=settings.worker.connect_timeout_s,
                                                    statement_timeout_ms=settings.worker.statement_timeout_ms),
                              pid, started_at, terminate)


async def _kill_route(name: str, pid: int, body: KillIn, session: SessionDep, settings: Settings,
                      who: str, terminate: bool) -> dict[str, Any]:
    inst, ops = await _instance(session, name)
    action = "terminate" if terminate else "cancel"
    if not settings.live.allow_terminate:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{action} is off unless live.allow_terminate is set")
    _throttle(inst.name, settings)
    done = await _kill(inst, ops, settings, pid, body.started_at, terminate)
    session.add(AuditLog(actor=who, action=f"live.{action}", target=f"{name}/{pid}",
                         details={"started_at": body.started_at.isoformat()},
                         outcome="ok" if done else "refused"))
    if not done:
        await session.commit()  # the refusal is audited too
        raise HTTPException(status.HTTP_409_CONFLICT, f"session {pid} started at {body.started_at.isoformat()} "
                                                      "is not there: it ended, or its id was reused; nothing killed")
    return {"instance": name, "session_id": pid, "action": action, "done": True}


KILL = LIVE | errors.OPERATOR | errors.responses(400, 409)


@router.post("/instances/{name}/sessions/{pid}:cancel", response_model=KillOut, responses=KILL)
async def cancel_session(name: InstanceName, pid: SessionId, body: KillIn, session: SessionDep, settings: SettingsDep,
                         principal: OperatorDep) -> dict[str, Any]:
    """Cancel the session's running statement (pg_cancel_backend / KILL QUERY / Oracle 18c+ ALTER SYSTEM
    CANCEL SQL); SQL Server has none (400)."""
    return await _kill_route(name, pid, body, session, settings, principal.name, terminate=False)


@router.post("/instances/{name}/sessions/{pid}:terminate", response_model=KillOut, responses=KILL)
async def terminate_session(name: InstanceName, pid: SessionId, body: KillIn, session: SessionDep,
                            settings: SettingsDep, principal: OperatorDep) -> dict[str, Any]:
    """End the session (pg_terminate_backend / KILL / Oracle ALTER SYSTEM KILL SESSION 'sid,serial#')."""
    return await _kill_route(name, pid, body, session, settings, principal.name, terminate=True)
