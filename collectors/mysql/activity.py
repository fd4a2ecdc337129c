"""Sessions right now (MySQL, MariaDB): long-running queries, idle in transaction, InnoDB blocking chains.

Server-level (Scope.server): the processlist and InnoDB's transaction tables are server-wide; each
finding names its session's schema. Lock waits come from information_schema.INNODB_LOCK_WAITS on
MariaDB and MySQL 5.7, and performance_schema.data_lock_waits on MySQL 8 (5.7's table is gone there).
Wait sampling counts active sessions per command and thread state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from collectors.common.blocking import blocking_findings, cap_query, wait_samples
from collectors.common.live import (
    LiveOps,
    PlanRefused,
    is_statement_timeout,
    register_live,
)
from collectors.common.versions import closest_lower_or_raise
from collectors.engines.base import SessionLimits, Target
from collectors.mysql._common import MARIADB_MIN, MYSQL_57, MYSQL_80
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

SESSIONS_SELECT = """
select p.ID as id, coalesce(p.DB, '') as db, p.USER as user, coalesce(p.HOST, '') as host,
       p.COMMAND as command, p.TIME as time_s, coalesce(p.STATE, '') as state, left(p.INFO, 2000) as query,
       now() - interval p.TIME second as query_start, t.trx_id, t.trx_state, t.trx_started,
       timestampdiff(second, t.trx_started, now()) as trx_age_s,
       timestampdiff(second, t.trx_wait_started, now()) as wait_s
from information_schema.PROCESSLIST p
left join information_schema.INNODB_TRX t on t.trx_mysql_thread_id = p.ID
where p.ID <> connection_id()
order by p.ID
"""
SESSIONS_SQL = {MYSQL_57: SESSIONS_SELECT}
_IS_WAITS = "select requesting_trx_id, blocking_trx_id from information_schema.INNODB_LOCK_WAITS"
LOCK_WAITS_SQL = {
    MYSQL_57: _IS_WAITS,
    MYSQL_80: "select REQUESTING_ENGINE_TRANSACTION_ID as requesting_trx_id, "
              "BLOCKING_ENGINE_TRANSACTION_ID as blocking_trx_id from performance_schema.data_lock_waits",
    MARIADB_MIN: _IS_WAITS,
}

THRESHOLDS: dict[str, Any] = {
    # Five minutes: past any OLTP statement and most reports (the PostgreSQL collector's default too).
    "long_running_query_s": 300,
    # A minute asleep inside an open InnoDB transaction: a client that forgot to commit, holding locks.
    "idle_in_transaction_s": 60,
    # Thirty seconds blocked is near innodb_lock_wait_timeout's 50 s default: users already see errors.
    "blocking_chain_s": 30,
}
_SYSTEM_USERS = ("system user", "event_scheduler")
_RUNNING = ("Query", "Execute")


def session(r: Mapping[str, Any], blocked_by: Sequence[Any] = ()) -> dict[str, Any]:
    """A processlist row (with its InnoDB transaction) as the engine-neutral session."""
    return {"session_id": int(r["id"]), "database": r["db"], "user": r["user"], "client": r["host"],
            "command": r["command"], "state": r["state"], "query": cap_query(r["query"]),
            "query_age_s": float(r["time_s"] or 0), "xact_age_s": _float(r["trx_age_s"]),
            "trx_id": None if r["trx_id"] is None else str(r["trx_id"]), "wait_s": _float(r["wait_s"]),
            "started_at": _iso(r.get("trx_started")), "query_start": _iso(r.get("query_start")),
            "wait_class": r["command"], "wait_event": r["state"] or None, "blocked_by": list(blocked_by),
            "active": r["command"] in _RUNNING and r["user"] not in _SYSTEM_USERS}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def sessions_with_blockers(rows: Sequence[Mapping[str, Any]], waits: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Map transaction-level lock waits onto the threads that own those transactions."""
    thread_of = {str(r["trx_id"]): int(r["id"]) for r in rows if r["trx_id"] is not None}
    blockers: dict[int, set[int]] = {}
    for w in waits:
        waiter, holder = thread_of.get(str(w["requesting_trx_id"])), thread_of.get(str(w["blocking_trx_id"]))
        if waiter is not None and holder is not None:
            blockers.setdefault(waiter, set()).add(holder)
    return [session(r, sorted(blockers.get(int(r["id"]), ()))) for r in rows]


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context, waits: Sequence[Mapping[str, Any]] = ()) -> Result:
    """Processlist rows (+ lock waits) -> long_running_query, idle_in_transaction, blocking_chain."""
    t, sessions = ctx.thresholds, sessions_with_blockers(rows, waits)
    result = Result(samples=wait_samples(sessions))
    for s in sessions:
        if s["active"] and s["query_age_s"] >= t["long_running_query_s"]:
            result.findings.append(_finding("long_running_query", s, f"has run {s['query_age_s']:,.0f} s",
                                            f"EXPLAIN it; to stop it: KILL QUERY {s['session_id']}; and set "
                                            "max_statement_time (MariaDB) / max_execution_time (MySQL)."))
        elif s["command"] == "Sleep" and s["trx_id"] and s["query_age_s"] >= t["idle_in_transaction_s"]:
            result.findings.append(_finding("idle_in_transaction", s,
                                            f"sleeps {s['query_age_s']:,.0f} s inside an open transaction",
                                            "Fix the application's commit path; end it with "
                                            f"KILL {s['session_id']}; and lower wait_timeout for that user."))
    result.findings += blocking_findings(sessions, t["blocking_chain_s"],
                                         "KILL {id}; (KILL QUERY stops only a running statement; an idle "
                                         "root keeps its locks until its connection ends)",
                                         "select * from sys.innodb_lock_waits")
    return result


def _finding(check: str, s: Mapping[str, Any], what: str, recommendation: str) -> Finding:
    keys = ("database", "user", "client", "command", "state", "query", "query_age_s", "xact_age_s", "trx_id")
    return Finding(
        check=check, object=f"{s['database']}:{s['session_id']}", severity=Severity.warning,
        title=f"Session {s['session_id']} of {s['user']} {what}",
        details={k: s[k] for k in keys} | {"sql": "select * from information_schema.PROCESSLIST"},
        recommendation=recommendation,
    )


async def snapshot(conn: Connection) -> tuple[list[dict], list[dict]]:
    """Processlist + lock waits, as the collector and the live API read them."""
    version = conn.server_version
    rows = await conn.fetch(closest_lower_or_raise(SESSIONS_SQL, version, "activity needs mysql"))
    waits = await conn.fetch(closest_lower_or_raise(LOCK_WAITS_SQL, version, "activity needs mysql"))
    return rows, waits


async def run(conn: Connection, ctx: Context) -> Result:
    rows, waits = await snapshot(conn)
    return transform(rows, ctx, waits)


SPEC = register(CollectorSpec(
    name="activity",
    engine="mysql",
    description="Sessions now: long-running queries, idle in transaction, InnoDB blocking chains, thread states",
    sql=SESSIONS_SQL,
    transform=transform,
    run=run,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))


# --- live troubleshooting (app/api/live.py through collectors.common.live) ---------------------

async def sessions_now(conn: Connection) -> list[dict[str, Any]]:
    return sessions_with_blockers(*await snapshot(conn))


async def explain(conn: Connection, text: str, analyze: bool) -> dict[str, Any]:
    """EXPLAIN FORMAT=JSON (MariaDB's ANALYZE FORMAT=JSON runs it, when allowed)."""
    if "?" in text:
        raise PlanRefused("a digest with ? placeholders cannot be planned on MySQL: give the query with literals")
    verb = "ANALYZE FORMAT=JSON" if analyze and conn.server_version >= MARIADB_MIN else "EXPLAIN FORMAT=JSON"
    try:
        rows = await conn.fetch(f"{verb} {text}")
    except Exception as e:
        if not getattr(e, "args", None) or not isinstance(e.args[0], int) or is_statement_timeout(e):
            raise
        raise PlanRefused(f"the server refused to plan it: {e}") from None
    plan = next(iter(rows[0].values()))
    return {"plan": json.loads(plan), "text": plan}


# The processlist has no connection start: TIME seconds since the command began is what it gives.
KILL_MATCH_SQL = ("select ID from information_schema.PROCESSLIST where ID = %s "
                  "and abs(timestampdiff(second, now() - interval TIME second, %s)) <= 2")


async def kill(target: Target, limits: SessionLimits, pid: int, started_at: datetime, terminate: bool) -> bool:
    """KILL QUERY / KILL on a writable session, only if the thread still runs the command started then."""
    from collectors.engines.mysql import open_raw
    conn = await open_raw(target, limits)
    try:
        async with conn.cursor() as cur:
            await cur.execute(KILL_MATCH_SQL, (pid, started_at.replace(tzinfo=None)))
            if not await cur.fetchall():
                return False
            await cur.execute(f"KILL {'' if terminate else 'QUERY '}{int(pid)}")
            return True
    finally:
        conn.close()


LIVE = register_live(LiveOps(family="mysql", dialect="mysql", sessions=sessions_now, explain=explain, kill=kill))
