"""Sessions right now (Oracle): long-running calls, idle in transaction, blocking chains, waits.

Server-level (Scope.server): V$SESSION is the whole instance (this instance only: on RAC, a blocker on
another instance shows as BLOCKING_INSTANCE and is not followed). Blocking comes from
V$SESSION.BLOCKING_SESSION when BLOCKING_SESSION_STATUS is VALID. A session is identified by SID and
SERIAL#: the SID alone is reused, so kills name both. Wait samples count active sessions per wait
class and event the way ASH does: on CPU when not waiting, idle waits left out.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from collectors.common.blocking import blocking_findings, cap_query, wait_samples
from collectors.common.live import (
    LiveOps,
    NotOnThisEngine,
    PlanRefused,
    is_statement_timeout,
    register_live,
    sessions_from,
)
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

ORACLE_11_2 = 110200
ORACLE_18 = 180000

# WAIT_TIME_MICRO (11g+) is the time in the current wait while STATE = 'WAITING'. LAST_CALL_ET is the
# seconds since the session became ACTIVE (or INACTIVE). V$SQL.SQL_TEXT is the first 1000 characters.
_SESSIONS_SELECT = """
SELECT s.sid, s.serial# AS serial, COALESCE(s.username, '') AS username, COALESCE(s.osuser, '') AS osuser,
       COALESCE(s.machine, '') AS machine, COALESCE(s.program, '') AS program, COALESCE(s.module, '') AS module,
       s.status, s.state, s.wait_class, s.event, s.wait_time_micro, s.blocking_session,
       s.blocking_session_status, s.logon_time, s.sql_exec_start, s.last_call_et, s.sql_id, {pdb} AS pdb,
       (SELECT ROUND((SYSDATE - MIN(t.start_date)) * 86400) FROM v$transaction t
        WHERE t.ses_addr = s.saddr) AS xact_age_s,
       (SELECT MAX(q.sql_text) FROM v$sql q
        WHERE q.sql_id = s.sql_id AND q.child_number = s.sql_child_number) AS query
FROM v$session s
WHERE s.type = 'USER' AND s.sid <> SYS_CONTEXT('USERENV', 'SID')
ORDER BY s.sid
"""
SESSIONS_SQL = {
    ORACLE_11_2: _SESSIONS_SELECT.format(pdb="''"),
    # 12c multitenant: the CDB root sees every PDB's sessions; the finding names the PDB.
    120100: _SESSIONS_SELECT.format(pdb="COALESCE((SELECT p.name FROM v$pdbs p WHERE p.con_id = s.con_id), '')"),
}

THRESHOLDS: dict[str, Any] = {
    # Five minutes: past any OLTP statement and most reports (the PostgreSQL collector's default too).
    "long_running_query_s": 300,
    # A minute INACTIVE with an open transaction: a client that forgot to commit, holding its row locks.
    "idle_in_transaction_s": 60,
    # Thirty seconds blocked (enq: TX - row lock contention): users already see errors.
    "blocking_chain_s": 30,
}


def session(r: Mapping[str, Any]) -> dict[str, Any]:
    """A V$SESSION row as the engine-neutral session."""
    waiting = r["state"] == "WAITING"
    blocker = r["blocking_session"] if r["blocking_session_status"] == "VALID" else None
    active = r["status"] == "ACTIVE"
    return {"session_id": int(r["sid"]), "serial": int(r["serial"]), "database": r["pdb"], "user": r["username"],
            "os_user": r["osuser"], "application": r["program"], "module": r["module"], "client": r["machine"],
            "state": r["status"], "wait_class": r["wait_class"] if waiting else None,
            "wait_event": r["event"] if waiting else None, "sql_id": r["sql_id"], "query": cap_query(r["query"]),
            "query_age_s": float(r["last_call_et"] or 0) if active else None,
            "idle_s": float(r["last_call_et"] or 0) if not active else None,
            "xact_age_s": None if r["xact_age_s"] is None else float(r["xact_age_s"]),
            "wait_s": (r["wait_time_micro"] or 0) / 1e6 if blocker is not None and waiting else None,
            "blocked_by": [int(blocker)] if blocker is not None else [],
            "started_at": _iso(r["logon_time"]), "query_start": _iso(r["sql_exec_start"]),
            "active": active and not (waiting and r["wait_class"] == "Idle")}


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """V$SESSION rows -> long_running_query, idle_in_transaction, blocking_chain, wait samples."""
    t, sessions = ctx.thresholds, [session(r) for r in rows]
    result = Result(samples=wait_samples(sessions))
    for s in sessions:
        kill = f"ALTER SYSTEM KILL SESSION '{s['session_id']},{s['serial']}' IMMEDIATE;"
        if s["active"] and s["sql_id"] and (s["query_age_s"] or 0) >= t["long_running_query_s"]:
            result.findings.append(_finding(
                "long_running_query", s, f"has been in one call for {s['query_age_s']:,.0f} s",
                f"Look at its plan: SELECT * FROM TABLE(DBMS_XPLAN.DISPLAY_CURSOR('{s['sql_id']}')); and "
                "V$SQL_MONITOR. To stop the statement and keep the session (18c+): ALTER SYSTEM CANCEL SQL "
                f"'{s['session_id']},{s['serial']}'; to end the session: {kill} A Resource Manager plan "
                "(MAX_EST_EXEC_TIME / SWITCH_TIME) keeps it from recurring."))
        elif s["state"] == "INACTIVE" and s["xact_age_s"] is not None and (s["idle_s"] or 0) >= t["idle_in_transaction_s"]:
            result.findings.append(_finding(
                "idle_in_transaction", s, f"is idle {s['idle_s']:,.0f} s with an open transaction",
                "The client changed rows and stopped talking: it holds their row locks and its undo. Fix the "
                f"application's commit path; end it with {kill} (its transaction rolls back); a Resource "
                "Manager MAX_IDLE_BLOCKER_TIME ends idle blockers by itself."))
    result.findings += blocking_findings(sessions, t["blocking_chain_s"],
                                         "ALTER SYSTEM KILL SESSION '{id},{serial}' IMMEDIATE; (needs ALTER "
                                         "SYSTEM; its transaction rolls back first)",
                                         "SELECT sid, serial#, blocking_session, event, wait_time_micro "
                                         "FROM v$session WHERE blocking_session IS NOT NULL")
    return result


def _finding(check: str, s: Mapping[str, Any], what: str, recommendation: str) -> Finding:
    keys = ("database", "user", "os_user", "application", "module", "client", "state", "sql_id", "query",
            "query_age_s", "idle_s", "xact_age_s", "started_at", "query_start")
    return Finding(
        check=check, object=f"{s['database']}:{s['session_id']},{s['serial']}", severity=Severity.warning,
        title=f"Session {s['session_id']},{s['serial']} of {s['user']} {what}",
        details={k: s[k] for k in keys} | {"sid": s["session_id"], "serial": s["serial"],
                                           "sql": "SELECT * FROM v$session WHERE type = 'USER'"},
        recommendation=recommendation,
    )


SPEC = register(CollectorSpec(
    name="activity",
    engine="oracle",
    description="Sessions now: long-running calls, idle in transaction, blocking chains, waits",
    sql=SESSIONS_SQL,
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))


# --- live troubleshooting (app/api/live.py through collectors.common.live) ---------------------

# EXPLAIN PLAN writes rows into the session's PLAN_TABLE (a global temporary table); the adapter rolls
# them back after these two reads.
PLAN_ROWS_SQL = """
SELECT id, parent_id, depth, operation, options, object_owner, object_name, cost, cardinality, bytes,
       access_predicates, filter_predicates
FROM plan_table WHERE statement_id = :statement_id ORDER BY id
"""
XPLAN_SQL = ("SELECT plan_table_output FROM TABLE(DBMS_XPLAN.DISPLAY('PLAN_TABLE', :statement_id, "
             "'TYPICAL'))")
_STRING = re.compile(r"'(?:[^']|'')*'")
_BIND_ANY = re.compile(r"(?<![\w:]):(\w+|\"\w+\")")
_UNPARSED_BIND = re.compile(r"(?<![\w:]):(?:(\d+)|\"(\w+)\")")


def for_parsing(text: str) -> str:
    """sqlglot reads :name binds but not :1 or :"SYS_B_0" (cursor_sharing=FORCE): name them, outside literals."""
    parts = re.split(r"('(?:[^']|'')*')", text)
    return "".join(p if i % 2 else _UNPARSED_BIND.sub(lambda m: f":b_{m.group(1) or m.group(2)}", p)
                   for i, p in enumerate(parts))


def plan_tree(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """PLAN_TABLE rows -> the nested operation tree (children by PARENT_ID)."""
    nodes = {int(r["id"]): {"id": int(r["id"]), "operation": " ".join(filter(None, (r["operation"], r["options"]))),
                            "object": ".".join(filter(None, (r["object_owner"], r["object_name"]))),
                            "cost": r["cost"], "rows": r["cardinality"], "bytes": r["bytes"],
                            "access": r["access_predicates"], "filter": r["filter_predicates"], "children": []}
             for r in rows}
    for r in rows:
        if r["parent_id"] is not None and int(r["parent_id"]) in nodes:
            nodes[int(r["parent_id"])]["children"].append(nodes[int(r["id"])])
    return nodes.get(0)


async def explain(conn: Connection, text: str, analyze: bool) -> dict[str, Any]:
    """EXPLAIN PLAN + DBMS_XPLAN.DISPLAY: the optimizer's plan, the statement never runs. Bind variables
    (:1, :b1 in a stored text) are planned as unknown values."""
    if analyze:
        raise NotOnThisEngine("EXPLAIN ANALYZE is not offered on Oracle: the actual plan "
                              "(DBMS_XPLAN.DISPLAY_CURSOR with GATHER_PLAN_STATISTICS) runs the statement")
    statement_id = f"dbfleet_{uuid.uuid4().hex[:16]}"
    binds = dict.fromkeys(m.strip('"') for m in _BIND_ANY.findall(_STRING.sub("''", text)))
    try:
        rows, lines = await conn.explain_plan(  # type: ignore[attr-defined]
            text, statement_id, binds, (PLAN_ROWS_SQL, XPLAN_SQL))
    except Exception as e:
        if is_statement_timeout(e) or "ORA-" not in str(e):
            raise
        raise PlanRefused(f"the server refused to plan it: {str(e).splitlines()[0]}") from None
    return {"plan": plan_tree(rows), "text": "\n".join(str(r["plan_table_output"]) for r in lines)}


# LOGON_TIME and SQL_EXEC_START are DATEs (whole seconds), as /activity shows them.
KILL_MATCH_SQL = """
SELECT s.sid, s.serial# AS serial FROM v$session s
WHERE s.sid = :sid AND s.type = 'USER'
  AND (s.logon_time = CAST(:logon_time AS DATE) OR s.sql_exec_start = CAST(:call_start AS DATE))
"""
KILL_SQL = {ORACLE_11_2: "ALTER SYSTEM KILL SESSION '{sid},{serial}' IMMEDIATE"}
CANCEL_SQL = {ORACLE_18: "ALTER SYSTEM CANCEL SQL '{sid},{serial}'"}
# ORA-00030: the SID,SERIAL# pair no longer exists (it ended between the match and the kill).
_GONE = "ORA-00030"


def kill_statement(version: int, sid: int, serial: int, terminate: bool) -> str:
    if terminate:
        return closest_lower_or_raise(KILL_SQL, version, "kill session needs oracle").format(sid=sid, serial=serial)
    if version < ORACLE_18:
        raise NotOnThisEngine("ALTER SYSTEM CANCEL SQL is Oracle 18c and later: use :terminate (KILL SESSION)")
    return CANCEL_SQL[ORACLE_18].format(sid=sid, serial=serial)


async def kill(target: Target, limits: SessionLimits, sid: int, started_at: datetime, terminate: bool) -> bool:
    """CANCEL SQL / KILL SESSION by SID and SERIAL#, only if the SID still names the session logged in (or
    the call started) then: the serial# found that way cannot be reused, so the kill names that one."""
    from collectors.engines.oracle import open_writable
    conn = await open_writable(target, limits, action="live kill")
    try:
        at = started_at.replace(tzinfo=None)  # DATEs are the server's wall clock
        found = await conn.fetch(KILL_MATCH_SQL, int(sid), at, at)
        if not found:
            return False
        statement = kill_statement(conn.server_version, int(sid), int(found[0]["serial"]), terminate)
        try:
            await conn.execute(statement)
        except Exception as e:
            if _GONE in str(e):
                return False
            raise
        return True
    finally:
        await conn.close()


LIVE = register_live(LiveOps(family="oracle", dialect="oracle", sessions=partial(sessions_from, sql=SESSIONS_SQL, session=session), explain=explain, kill=kill,
                             for_parsing=for_parsing))
