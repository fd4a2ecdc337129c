"""Live troubleshooting: sessions, lock trees, EXPLAIN, cancel/terminate, read from the monitored database now.

Every request opens its own short session (read-only unless it kills something), runs under the
worker's statement timeout, and is rate-limited per instance so a console left open cannot hammer
a database. Nothing here reads or writes the store's samples.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import sqlglot
from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select
from sqlglot import exp

from app.api.deps import OperatorDep, SessionDep, SettingsDep, ViewerDep
from app.auth import Role
from app.inventory.credentials import resolve_credential
from app.models import AuditLog, Instance, QueryText
from app.settings import Settings
from collectors.common.blocking import cap_query, lock_trees
from collectors.engines.base import ConnectFailed, SessionLimits, Target, connect
from collectors.spec import Connection

router = APIRouter(prefix="/api/v1", tags=["live"])
UNREACHABLE = {502: {"description": "the monitored database could not be reached (the reason is in detail)"},
               429: {"description": "too many live requests for this instance; see Retry-After"}}
UNPROCESSABLE = 422  # starlette renamed its constant (ENTITY -> CONTENT); the number stays
_last_request: dict[str, float] = {}
_PLANNED = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Into)


async def _instance(session: SessionDep, name: str) -> Instance:
    inst = (await session.execute(select(Instance).where(Instance.name == name))).scalar_one_or_none()
    if inst is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no instance named {name!r}")
    if inst.engine.split("-")[-1] not in ("postgres", "mysql", "mariadb"):
        raise HTTPException(UNPROCESSABLE, f"live views are not available for {inst.engine}")
    return inst


def _throttle(name: str, settings: Settings) -> None:
    """At most one live request per instance per live.min_interval_s in this process."""
    now, last = time.monotonic(), _last_request.get(name)
    if last is not None and now - last < settings.live.min_interval_s:
        wait = settings.live.min_interval_s - (now - last)
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, f"one live request per "
                            f"{settings.live.min_interval_s:g} s per instance", headers={"Retry-After": str(max(1, round(wait)))})
    _last_request[name] = now


async def _target(inst: Instance, settings: Settings) -> Target:
    info = {"name": inst.name, "engine": inst.engine, "host": inst.host, "port": inst.port, "user": inst.user,
            "cloud": inst.cloud}
    try:
        password = await resolve_credential(inst.credential, info, allowed=settings.credentials)
    except Exception as e:  # a refused or missing credential is the instance's problem, not a 500
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"credential for {inst.name}: {e}") from None
    return Target(name=inst.name, engine=inst.engine, host=inst.host, port=inst.port, dbname=inst.dbname,
                  user=inst.user, password=password, tls_mode=inst.tls_mode, options=dict(inst.cloud or {}))


@asynccontextmanager
async def _live(inst: Instance, settings: Settings) -> AsyncIterator[Connection]:
    """A fresh read-only session under the worker's timeouts; 502 with the reason if none opens."""
    _throttle(inst.name, settings)
    w = settings.worker
    try:
        conn = await connect(await _target(inst, settings), SessionLimits(
            connect_timeout_s=w.connect_timeout_s, statement_timeout_ms=w.statement_timeout_ms,
            lock_timeout_ms=w.lock_timeout_ms, application_name="dbfleet-live"))
    except ConnectFailed as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{inst.name} is unreachable: {e}") from None
    try:
        yield conn
    finally:
        await conn.close()


async def sessions_now(conn: Connection) -> list[dict[str, Any]]:
    """Every session on the server as the activity collectors see it, blockers included."""
    if conn.engine == "postgres":
        from collectors.postgres.activity import SESSIONS_SQL, session
        from collectors.common.versions import closest_lower_or_raise
        return [session(r) for r in await conn.fetch(closest_lower_or_raise(SESSIONS_SQL, conn.server_version, "pg"))]
    from collectors.mysql.activity import sessions_with_blockers, snapshot
    return sessions_with_blockers(*await snapshot(conn))


@router.get("/instances/{name}/activity", responses=UNREACHABLE)
async def activity(name: str, session: SessionDep, settings: SettingsDep, _: ViewerDep) -> dict[str, Any]:
    """What every session on the instance is doing now."""
    async with _live(await _instance(session, name), settings) as conn:
        return {"instance": name, "sessions": await sessions_now(conn)}


@router.get("/instances/{name}/locks", responses=UNREACHABLE)
async def locks(name: str, session: SessionDep, settings: SettingsDep, _: ViewerDep) -> dict[str, Any]:
    """Who blocks whom now, as nested trees rooted at the sessions that block but wait on nobody."""
    async with _live(await _instance(session, name), settings) as conn:
        return {"instance": name, "trees": lock_trees(await sessions_now(conn))}


class ExplainIn(BaseModel):
    query: str | None = Field(None, max_length=100_000)
    queryid: str | None = Field(None, max_length=128)
    analyze: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> ExplainIn:
        if (self.query is None) == (self.queryid is None):
            raise ValueError("give exactly one of query or queryid")
        return self


def refusal(text: str, engine: str) -> str | None:
    """Why a text is not one plain SELECT we may plan, or None."""
    dialect = "postgres" if engine.endswith("postgres") else "mysql"
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


@router.post("/instances/{name}/explain", responses=UNREACHABLE)
async def explain(name: str, body: ExplainIn, session: SessionDep, settings: SettingsDep,
                  principal: ViewerDep) -> dict[str, Any]:
    """The plan of one SELECT, inside a read-only transaction that is rolled back."""
    inst = await _instance(session, name)
    text = await _query_text(session, inst, body)
    if (why := refusal(text, inst.engine)) is not None:
        raise HTTPException(UNPROCESSABLE, f"refused: {why}")
    if body.analyze and not settings.live.allow_analyze:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "EXPLAIN ANALYZE runs the query; it is off "
                                                       "unless live.allow_analyze is set")
    if body.analyze and principal.role < Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "EXPLAIN ANALYZE needs the admin role")
    async with _live(inst, settings) as conn:
        plan = await (_explain_pg(conn, text, body.analyze) if conn.engine == "postgres"
                      else _explain_mysql(conn, text, body.analyze))
    session.add(AuditLog(actor=principal.name, action="live.explain", target=name,
                         details={"query": cap_query(text), "queryid": body.queryid, "analyze": body.analyze}))
    return {"instance": name, "analyze": body.analyze, **plan}


async def _explain_pg(conn: Connection, text: str, analyze: bool) -> dict[str, Any]:
    """$n parameters: PREPARE + force_generic_plan, as index advice does (EXPLAIN GENERIC_PLAN is 16+)."""
    raw = conn.raw  # type: ignore[attr-defined]
    params = max((int(n) for n in re.findall(r"\$(\d+)", text)), default=0)
    if params and analyze:
        raise HTTPException(UNPROCESSABLE, "a text with $n parameters has no values "
                                                                  "to run with: EXPLAIN ANALYZE needs literals")
    options = "analyze, buffers, " if analyze else ""
    tx = raw.transaction(readonly=True)
    await tx.start()
    try:
        if params:
            await raw.execute("set local plan_cache_mode = force_generic_plan")
            await raw.execute(f"prepare dbfleet_live as {text}")
            target = f"execute dbfleet_live({', '.join(['null'] * params)})"
        else:
            target = text
        plan = await raw.fetchval(f"explain ({options}format json) {target}")
        lines = [] if analyze else [r[0] for r in await raw.fetch(f"explain {target}")]
    except Exception as e:
        if getattr(e, "sqlstate", None) is None:
            raise
        raise HTTPException(UNPROCESSABLE, f"the server refused to plan it: {e}") from None
    finally:
        await tx.rollback()
    return {"plan": json.loads(plan) if isinstance(plan, str) else plan, "text": "\n".join(lines)}


async def _explain_mysql(conn: Connection, text: str, analyze: bool) -> dict[str, Any]:
    if "?" in text:
        raise HTTPException(UNPROCESSABLE, "a digest with ? placeholders cannot be "
                                                                  "planned on MySQL: give the query with literals")
    verb = "ANALYZE FORMAT=JSON" if analyze and conn.server_version >= 100000 else "EXPLAIN FORMAT=JSON"
    try:
        rows = await conn.fetch(f"{verb} {text}")
    except Exception as e:
        if not getattr(e, "args", None) or not isinstance(e.args[0], int):
            raise
        raise HTTPException(UNPROCESSABLE, f"the server refused to plan it: {e}") from None
    plan = next(iter(rows[0].values()))
    return {"plan": json.loads(plan), "text": plan}


class KillIn(BaseModel):
    started_at: datetime = Field(description="the session's backend_start or query_start as /activity shows "
                                             "it (MySQL: query_start, in server time): a reused id never matches")


# One statement: the check and the kill cannot be split by the pid being reused in between.
_PG_KILL = """
select {fn}(pid) as done from pg_stat_activity
where pid = $1 and (abs(extract(epoch from backend_start - $2::timestamptz)) < 0.001
                    or abs(extract(epoch from query_start - $2::timestamptz)) < 0.001)
"""
# The processlist has no connection start: TIME seconds since the command began is what it gives.
_MY_MATCH = ("select ID from information_schema.PROCESSLIST where ID = %s "
             "and abs(timestampdiff(second, now() - interval TIME second, %s)) <= 2")


async def _kill(inst: Instance, settings: Settings, pid: int, started_at: datetime, terminate: bool) -> bool:
    """Kill on a writable session, only if the id still names the session started then."""
    target, limits = await _target(inst, settings), SessionLimits(connect_timeout_s=settings.worker.connect_timeout_s)
    try:
        if target.family == "postgres":
            import asyncpg
            from collectors.engines.pg import _ssl_for
            conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user or None,
                                         password=target.password, database=target.dbname or None,
                                         ssl=_ssl_for(target.tls_mode), timeout=limits.connect_timeout_s)
            try:
                fn = "pg_terminate_backend" if terminate else "pg_cancel_backend"
                return bool(await conn.fetchval(_PG_KILL.format(fn=fn), pid, started_at))
            finally:
                await conn.close()
        return await _kill_mysql(target, limits, pid, started_at, terminate)
    except ConnectFailed as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{inst.name} is unreachable: {e}") from None
    except OSError as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{inst.name} is unreachable: {e}") from None


async def _kill_mysql(target: Target, limits: SessionLimits, pid: int, started_at: datetime, terminate: bool) -> bool:
    from collectors.engines.mysql import open_raw
    conn = await open_raw(target, limits)
    try:
        async with conn.cursor() as cur:
            await cur.execute(_MY_MATCH, (pid, started_at.replace(tzinfo=None)))
            if not await cur.fetchall():
                return False
            await cur.execute(f"KILL {'' if terminate else 'QUERY '}{int(pid)}")
            return True
    finally:
        conn.close()


async def _kill_route(name: str, pid: int, body: KillIn, session: SessionDep, settings: Settings,
                      who: str, terminate: bool) -> dict[str, Any]:
    inst = await _instance(session, name)
    action = "terminate" if terminate else "cancel"
    if not settings.live.allow_terminate:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{action} is off unless live.allow_terminate is set")
    _throttle(inst.name, settings)
    done = await _kill(inst, settings, pid, body.started_at, terminate)
    session.add(AuditLog(actor=who, action=f"live.{action}", target=f"{name}/{pid}",
                         details={"started_at": body.started_at.isoformat()},
                         outcome="ok" if done else "refused"))
    if not done:
        await session.commit()  # the refusal is audited too
        raise HTTPException(status.HTTP_409_CONFLICT, f"session {pid} started at {body.started_at.isoformat()} "
                                                      "is not there: it ended, or its id was reused; nothing killed")
    return {"instance": name, "session_id": pid, "action": action, "done": True}


@router.post("/instances/{name}/sessions/{pid}:cancel", responses=UNREACHABLE | {409: {"description": "stale"}})
async def cancel_session(name: str, pid: int, body: KillIn, session: SessionDep, settings: SettingsDep,
                         principal: OperatorDep) -> dict[str, Any]:
    """Cancel the session's running statement (pg_cancel_backend / KILL QUERY)."""
    return await _kill_route(name, pid, body, session, settings, principal.name, terminate=False)


@router.post("/instances/{name}/sessions/{pid}:terminate", responses=UNREACHABLE | {409: {"description": "stale"}})
async def terminate_session(name: str, pid: int, body: KillIn, session: SessionDep, settings: SettingsDep,
                            principal: OperatorDep) -> dict[str, Any]:
    """End the session (pg_terminate_backend / KILL)."""
    return await _kill_route(name, pid, body, session, settings, principal.name, terminate=True)
