"""Sessions right now: long-running queries, idle in transaction, blocking chains, the xmin horizon.

Server-level (Scope.server): pg_stat_activity and pg_locks are server-wide, so one run on the home
entry sees every database; each finding names its session's database. The same run counts active
sessions per wait event as samples ("what was it waiting on at 03:00").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from collectors.common.blocking import blocking_findings, cap_query, wait_samples
from collectors.common.live import LiveOps, PlanRefused, register_live, sessions_from
from collectors.common.versions import closest_lower_or_raise
from collectors.engines.base import SessionLimits, Target
from collectors.registry import register
from collectors.spec import (
    CollectorSpec,
    Connection,
    Context,
    Finding,
    Result,
    Scope,
    Severity,
)

# pg_blocking_pids() takes the lock manager's partition locks: only call it for a lock waiter.
# pg_locks.waitstart (14+) is when the wait began; before, query_start is the nearest we have.
_SESSIONS_SELECT = """
select a.pid, coalesce(a.datname, '') as datname, coalesce(a.usename, '') as usename,
       coalesce(a.application_name, '') as application_name, coalesce(a.client_addr::text, '') as client_addr,
       coalesce(a.state, '') as state, a.wait_event_type, a.wait_event, a.backend_type,
       left(a.query, 2000) as query, a.backend_start, a.query_start, a.xact_start,
       extract(epoch from now() - a.xact_start)::float8 as xact_age_s,
       extract(epoch from now() - a.query_start)::float8 as query_age_s,
       extract(epoch from now() - a.state_change)::float8 as state_age_s,
       age(a.backend_xmin)::bigint as xmin_age,
       case when a.wait_event_type = 'Lock' then pg_blocking_pids(a.pid) else '{{}}'::int[] end as blocked_by,
       {wait_s} as wait_s
from pg_stat_activity a
where a.pid <> pg_backend_pid()
order by a.pid
"""
SESSIONS_SQL = {
    100000: _SESSIONS_SELECT.format(wait_s="case when a.wait_event_type = 'Lock' then "
                                           "extract(epoch from now() - a.query_start)::float8 end"),
    140000: _SESSIONS_SELECT.format(wait_s="(select extract(epoch from now() - min(l.waitstart))::float8 "
                                           "from pg_locks l where l.pid = a.pid and not l.granted)"),
}
# The other holders of the xmin horizon besides backends (walsenders with hot_standby_feedback show
# up as backends, backend_type 'walsender').
HORIZON_SQL = """
select 'prepared_transaction' as holder, gid as name, age(transaction)::bigint as xmin_age,
       coalesce(database, '') as database
from pg_prepared_xacts
union all
select 'replication_slot', slot_name, greatest(age(xmin), age(catalog_xmin))::bigint, coalesce(database, '')
from pg_replication_slots
where xmin is not null or catalog_xmin is not null
"""

THRESHOLDS: dict[str, Any] = {
    # Five minutes: past any OLTP statement and most reports; the usual PgHero/DBM default.
    "long_running_query_s": 300,
    # A minute idle inside a transaction is a client that forgot to commit: it holds locks and xmin.
    "idle_in_transaction_s": 60,
    # Thirty seconds blocked is longer than most application timeouts: users already see errors.
    "blocking_chain_s": 30,
    # Ten million XIDs behind: vacuum cannot remove anything newer, and at a few thousand TPS that is
    # an hour of bloat; far below the 200M autovacuum_freeze_max_age so there is time to act.
    "xmin_horizon_age_xids": 10_000_000,
}
CLIENT_BACKEND = "client backend"
_IDLE_IN_TX = ("idle in transaction", "idle in transaction (aborted)")


def session(r: Mapping[str, Any]) -> dict[str, Any]:
    """A pg_stat_activity row as the engine-neutral session the lock tree and the live API show."""
    return {"session_id": r["pid"], "database": r["datname"], "user": r["usename"],
            "application": r["application_name"], "client": r["client_addr"], "state": r["state"],
            "wait_class": r["wait_event_type"], "wait_event": r["wait_event"], "backend_type": r["backend_type"],
            "query": cap_query(r["query"]), "query_age_s": r["query_age_s"], "xact_age_s": r["xact_age_s"],
            "state_age_s": r["state_age_s"], "wait_s": r["wait_s"], "blocked_by": list(r["blocked_by"] or ()),
            "started_at": _iso(r["backend_start"]), "query_start": _iso(r["query_start"]),
            "active": r["state"] == "active" and r["backend_type"] == CLIENT_BACKEND}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """pg_stat_activity rows -> long_running_query, idle_in_transaction, blocking_chain, wait samples."""
    t, sessions = ctx.thresholds, [session(r) for r in rows]
    result = Result(samples=wait_samples(sessions))
    for s in sessions:
        if s["backend_type"] != CLIENT_BACKEND:
            continue
        if s["state"] == "active" and (s["query_age_s"] or 0) >= t["long_running_query_s"]:
            result.findings.append(_long_running(s))
        elif s["state"] in _IDLE_IN_TX and (s["state_age_s"] or 0) >= t["idle_in_transaction_s"]:
            result.findings.append(_idle_in_transaction(s))
    result.findings += blocking_findings(sessions, t["blocking_chain_s"],
                                         "SELECT pg_terminate_backend({id}); (pg_cancel_backend only stops "
                                         "its current statement; an idle root keeps its locks)",
                                         "select pid, pg_blocking_pids(pid), wait_event, query from "
                                         "pg_stat_activity where wait_event_type = 'Lock'")
    return result


def _evidence(s: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("database", "user", "application", "client", "state", "wait_class", "wait_event", "query",
            "query_age_s", "xact_age_s", "state_age_s", "started_at", "query_start")
    return {k: s[k] for k in keys} | {"pid": s["session_id"], "sql": "select * from pg_stat_activity"}


def _long_running(s: Mapping[str, Any]) -> Finding:
    return Finding(
        check="long_running_query", object=f"{s['database']}:{s['session_id']}", severity=Severity.warning,
        title=f"A query of {s['user']} on {s['database']} has run {s['query_age_s']:,.0f} s (pid {s['session_id']})",
        details=_evidence(s),
        recommendation=f"EXPLAIN it (POST .../explain) and look for a missing index or a bad estimate. "
                       f"To stop it: SELECT pg_cancel_backend({s['session_id']}); set statement_timeout for "
                       f"the role (ALTER ROLE {s['user']} SET statement_timeout = '5min') so it cannot recur.",
    )


def _idle_in_transaction(s: Mapping[str, Any]) -> Finding:
    return Finding(
        check="idle_in_transaction", object=f"{s['database']}:{s['session_id']}", severity=Severity.warning,
        title=f"Session {s['session_id']} ({s['application'] or s['user']}) is idle in a transaction "
              f"for {s['state_age_s']:,.0f} s",
        details=_evidence(s),
        recommendation="The client opened a transaction and stopped talking: it holds its locks and the xmin "
                       f"horizon. Fix the application's commit path; end it with SELECT pg_terminate_backend"
                       f"({s['session_id']}); and set idle_in_transaction_session_timeout (e.g. '5min').",
    )


def horizon_holders(rows: Sequence[Mapping[str, Any]], others: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Everything that holds the xmin horizon back, oldest first: backends, prepared xacts, slots."""
    out = [{"holder": "standby_feedback" if r["backend_type"] == "walsender" else "transaction",
            "name": str(r["pid"]), "xmin_age": r["xmin_age"], "database": r["datname"],
            "xact_age_s": r["xact_age_s"], "application": r["application_name"]}
           for r in rows if r["xmin_age"] is not None]
    out += [dict(o) for o in others if o["xmin_age"] is not None]
    return sorted(out, key=lambda h: -h["xmin_age"])


def horizon_transform(rows: Sequence[Mapping[str, Any]], others: Sequence[Mapping[str, Any]],
                      ctx: Context) -> Result:
    holders = horizon_holders(rows, others)
    if not holders or holders[0]["xmin_age"] < ctx.thresholds["xmin_horizon_age_xids"]:
        return Result()
    oldest = holders[0]
    fix = {"transaction": f"SELECT pg_terminate_backend({oldest['name']});",
           "standby_feedback": "look at the standby's long queries, or turn hot_standby_feedback off there;",
           "prepared_transaction": f"COMMIT PREPARED '{oldest['name']}'; or ROLLBACK PREPARED '{oldest['name']}';",
           "replication_slot": f"SELECT pg_drop_replication_slot('{oldest['name']}'); if its consumer is gone;"}
    return Result(findings=[Finding(
        check="xmin_horizon_held", object=ctx.instance, severity=Severity.warning,
        title=f"The xmin horizon is {oldest['xmin_age']:,} XIDs old, held by {oldest['holder']} {oldest['name']}",
        details={"oldest": oldest, "holders": holders[:10],
                 "sql": "select pid, age(backend_xmin) from pg_stat_activity; pg_prepared_xacts; "
                        "pg_replication_slots"},
        recommendation=f"Vacuum cannot remove rows newer than this horizon anywhere on the server. "
                       f"End the holder: {fix[oldest['holder']]}",
    )])


async def _session_rows(conn: Connection) -> list[dict[str, Any]]:
    return await conn.fetch(closest_lower_or_raise(SESSIONS_SQL, conn.server_version, "activity needs postgres"))


async def run(conn: Connection, ctx: Context) -> Result:
    rows = await _session_rows(conn)
    result = transform(rows, ctx)
    result.findings += horizon_transform(rows, await conn.fetch(HORIZON_SQL), ctx).findings
    return result


SPEC = register(CollectorSpec(
    name="activity",
    engine="postgres",
    description="Sessions now: long-running queries, idle in transaction, blocking chains, xmin horizon, waits",
    sql=SESSIONS_SQL,
    transform=transform,
    run=run,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))


# --- live troubleshooting (app/api/live.py through collectors.common.live) ---------------------

async def explain(conn: Connection, text: str, analyze: bool) -> dict[str, Any]:
    """In a read-only transaction that is rolled back. $n parameters: PREPARE + force_generic_plan, as
    index advice does (EXPLAIN (GENERIC_PLAN) is 16+ only)."""
    raw = conn.raw  # type: ignore[attr-defined]
    params = max((int(n) for n in re.findall(r"\$(\d+)", text)), default=0)
    if params and analyze:
        raise PlanRefused("a text with $n parameters has no values to run with: EXPLAIN ANALYZE needs literals")
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
        if getattr(e, "sqlstate", None) is None or e.sqlstate == "57014":  # a timeout is not a refusal
            raise
        raise PlanRefused(f"the server refused to plan it: {e}") from None
    finally:
        await tx.rollback()
    return {"plan": json.loads(plan) if isinstance(plan, str) else plan, "text": "\n".join(lines)}


# One statement: the check and the kill cannot be split by the pid being reused in between.
KILL_SQL = """
select {fn}(pid) as done from pg_stat_activity
where pid = $1 and (abs(extract(epoch from backend_start - $2::timestamptz)) < 0.001
                    or abs(extract(epoch from query_start - $2::timestamptz)) < 0.001)
"""


async def kill(target: Target, limits: SessionLimits, pid: int, started_at: datetime, terminate: bool) -> bool:
    """pg_cancel_backend / pg_terminate_backend on a writable session, only if the pid still names the
    backend (or query) started then."""
    import asyncpg

    from collectors.engines.pg import _ssl_for
    conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user or None,
                                 password=target.password, database=target.dbname or None,
                                 ssl=_ssl_for(target.tls_mode), timeout=limits.connect_timeout_s)
    try:
        fn = "pg_terminate_backend" if terminate else "pg_cancel_backend"
        return bool(await conn.fetchval(KILL_SQL.format(fn=fn), pid, started_at))
    finally:
        await conn.close()


LIVE = register_live(LiveOps(family="postgres", dialect="postgres", sessions=partial(sessions_from, sql=SESSIONS_SQL, session=session), explain=explain,
                             kill=kill))
