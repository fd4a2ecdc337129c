"""Sessions right now (SQL Server): long-running requests, idle in transaction, blocking chains, waits.

Server-level (Scope.server): the DMVs are instance-wide; each finding names its session's database.
Blocking comes from sys.dm_exec_requests.blocking_session_id (> 0; -2/-3/-4 are orphaned distributed
transactions, deferred recovery and unknown latch owners: nobody to show). A root blocker is often a
sleeping session with an open transaction and no request, so sessions are read from
sys.dm_exec_sessions and requests joined to them. Wait samples count active requests per wait
category (Query Store's wait_category names) and wait type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any
from xml.etree import ElementTree

from collectors.common.blocking import blocking_findings, cap_query, wait_samples
from collectors.common.live import (
    LiveOps,
    NotOnThisEngine,
    PlanRefused,
    is_statement_timeout,
    register_live,
    sessions_from,
)
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

SQL_2012 = 11_000_000

# sys.dm_exec_connections has one row per MARS child too: the physical one has no parent.
# open_transaction_count is 2012+ (sys.sysprocesses.open_tran before).
SESSIONS_SQL = {SQL_2012: """
SELECT s.session_id, COALESCE(DB_NAME(COALESCE(r.database_id, s.database_id)), '') AS database_name,
       s.login_name, COALESCE(s.host_name, '') AS host_name, COALESCE(s.program_name, '') AS program_name,
       COALESCE(c.client_net_address, '') AS client_address, s.status AS session_status,
       r.status AS request_status, r.command, r.wait_type, r.wait_time AS wait_ms, r.blocking_session_id,
       s.login_time, r.start_time, s.open_transaction_count,
       DATEDIFF(SECOND, r.start_time, SYSDATETIME()) AS request_age_s,
       DATEDIFF(SECOND, s.last_request_end_time, SYSDATETIME()) AS idle_s,
       DATEDIFF(SECOND, t.transaction_begin_time, SYSDATETIME()) AS xact_age_s,
       LEFT(q.text, 2000) AS query
FROM sys.dm_exec_sessions AS s
LEFT JOIN sys.dm_exec_requests AS r ON r.session_id = s.session_id
LEFT JOIN sys.dm_exec_connections AS c ON c.session_id = s.session_id AND c.parent_connection_id IS NULL
OUTER APPLY (SELECT MIN(a.transaction_begin_time) AS transaction_begin_time
             FROM sys.dm_tran_session_transactions AS st
             JOIN sys.dm_tran_active_transactions AS a ON a.transaction_id = st.transaction_id
             WHERE st.session_id = s.session_id) AS t
OUTER APPLY sys.dm_exec_sql_text(COALESCE(r.sql_handle, c.most_recent_sql_handle)) AS q
WHERE s.is_user_process = 1 AND s.session_id <> @@SPID
ORDER BY s.session_id
"""}

THRESHOLDS: dict[str, Any] = {
    # Five minutes: past any OLTP statement and most reports (the PostgreSQL collector's default too).
    "long_running_query_s": 300,
    # A minute asleep with an open transaction: a client that forgot to commit, holding its locks.
    "idle_in_transaction_s": 60,
    # Thirty seconds blocked is the default client CommandTimeout: users already see errors.
    "blocking_chain_s": 30,
}
_RUNNING = ("running", "runnable", "suspended")
# A request in WAITFOR waits by design (Service Broker activation, a polling job): not a slow query,
# and not load to sample.
_WAITING_BY_DESIGN = ("WAITFOR",)
# Wait type prefix -> Query Store's wait category (sys.query_store_wait_stats.wait_category_desc).
_WAIT_CATEGORIES = (("LCK_M_", "Lock"), ("PAGEIOLATCH_", "Buffer IO"), ("PAGELATCH_", "Buffer Latch"),
                    ("LATCH_", "Latch"), ("CX", "Parallelism"), ("WRITELOG", "Tran Log IO"),
                    ("LOGBUFFER", "Tran Log IO"), ("ASYNC_NETWORK_IO", "Network IO"),
                    ("RESOURCE_SEMAPHORE", "Memory"), ("SOS_SCHEDULER_YIELD", "CPU"),
                    ("HADR_SYNC_COMMIT", "Replication"), ("ASYNC_IO_COMPLETION", "Other Disk IO"),
                    ("IO_COMPLETION", "Other Disk IO"))


def wait_category(wait_type: str | None) -> str | None:
    if not wait_type:
        return None
    return next((c for prefix, c in _WAIT_CATEGORIES if wait_type.startswith(prefix)), "Other")


def session(r: Mapping[str, Any]) -> dict[str, Any]:
    """A sys.dm_exec_sessions row (with its request) as the engine-neutral session."""
    blocker = int(r["blocking_session_id"] or 0)
    running = r["request_status"] in _RUNNING and r["command"] not in _WAITING_BY_DESIGN
    return {"session_id": int(r["session_id"]), "database": r["database_name"], "user": r["login_name"],
            "application": r["program_name"], "client": r["client_address"] or r["host_name"],
            "state": r["request_status"] or r["session_status"], "command": r["command"],
            "wait_class": wait_category(r["wait_type"]), "wait_event": r["wait_type"],
            "query": cap_query(r["query"]), "query_age_s": _float(r["request_age_s"]) if running else None,
            "xact_age_s": _float(r["xact_age_s"]), "idle_s": _float(r["idle_s"]),
            "open_transactions": int(r["open_transaction_count"] or 0),
            "wait_s": (r["wait_ms"] or 0) / 1000 if blocker > 0 else None,
            "blocked_by": [blocker] if blocker > 0 else [],
            "started_at": _iso(r["login_time"]), "query_start": _iso(r["start_time"]), "active": running}


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """Session rows -> long_running_query, idle_in_transaction, blocking_chain, wait samples."""
    t, sessions = ctx.thresholds, [session(r) for r in rows]
    result = Result(samples=wait_samples(sessions))
    for s in sessions:
        if s["active"] and (s["query_age_s"] or 0) >= t["long_running_query_s"]:
            result.findings.append(_finding(
                "long_running_query", s, f"has run {s['query_age_s']:,.0f} s",
                f"Look at its plan (POST .../explain, or sys.dm_exec_query_plan for the running one). To stop "
                f"it: KILL {s['session_id']}; (it rolls back what the statement did; that can take as long)."))
        elif (s["state"] == "sleeping" and s["open_transactions"] > 0
              and (s["idle_s"] or 0) >= t["idle_in_transaction_s"]):
            result.findings.append(_finding(
                "idle_in_transaction", s, f"sleeps {s['idle_s']:,.0f} s with an open transaction",
                "The client began a transaction and stopped talking: it holds its locks (and the version "
                "store under snapshot isolation). Fix the application's commit path (SET XACT_ABORT ON "
                f"avoids transactions left open by an error); end it with KILL {s['session_id']};"))
    result.findings += blocking_findings(sessions, t["blocking_chain_s"],
                                         "KILL {id}; (its open transaction rolls back first; "
                                         "SELECT * FROM sys.dm_exec_sessions WHERE session_id = {id} shows who it is)",
                                         "SELECT session_id, blocking_session_id, wait_type, wait_time "
                                         "FROM sys.dm_exec_requests WHERE blocking_session_id > 0")
    return result


def _finding(check: str, s: Mapping[str, Any], what: str, recommendation: str) -> Finding:
    keys = ("database", "user", "application", "client", "state", "command", "wait_event", "query",
            "query_age_s", "xact_age_s", "idle_s", "open_transactions", "started_at", "query_start")
    return Finding(
        check=check, object=f"{s['database']}:{s['session_id']}", severity=Severity.warning,
        title=f"Session {s['session_id']} of {s['user']} {what}",
        details={k: s[k] for k in keys} | {"session_id": s["session_id"],
                                           "sql": "SELECT * FROM sys.dm_exec_requests; sys.dm_exec_sessions"},
        recommendation=recommendation,
    )


SPEC = register(CollectorSpec(
    name="activity",
    engine="sqlserver",
    description="Sessions now: long-running requests, idle in transaction, blocking chains, waits",
    sql=SESSIONS_SQL,
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))


# --- live troubleshooting (app/api/live.py through collectors.common.live) ---------------------

SHOWPLAN_NS = {"p": "http://schemas.microsoft.com/sqlserver/2004/07/showplan"}


def plan_tree(showplan_xml: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A showplan XML document -> one nested RelOp tree per statement, and an indented text plan."""
    root = ElementTree.fromstring(showplan_xml)
    trees, lines = [], []
    for stmt in root.iter(f"{{{SHOWPLAN_NS['p']}}}StmtSimple"):
        top = stmt.find("p:QueryPlan/p:RelOp", SHOWPLAN_NS)
        tree = {"statement": stmt.get("StatementText", "").strip(),
                "estimated_cost": _num(stmt.get("StatementSubTreeCost")),
                "estimated_rows": _num(stmt.get("StatementEstRows")),
                "plan": _relop(top, lines, 0) if top is not None else None}
        trees.append(tree)
    return trees, lines


def _relop(node: ElementTree.Element, lines: list[str], depth: int) -> dict[str, Any]:
    # The object an operator reads is a child of its operator element (IndexScan/Object), not a descendant's.
    obj = next((o for op in node for o in op.findall("p:Object", SHOWPLAN_NS)), None)
    name = ".".join(obj.get(k, "").strip("[]") for k in ("Schema", "Table", "Index") if obj.get(k)) if obj is not None else ""
    out = {"node_id": int(node.get("NodeId", 0)), "physical_op": node.get("PhysicalOp"),
           "logical_op": node.get("LogicalOp"), "object": name, "estimated_rows": _num(node.get("EstimateRows")),
           "estimated_cost": _num(node.get("EstimatedTotalSubtreeCost"))}
    lines.append(f"{'  ' * depth}{out['physical_op']}{' on ' + name if name else ''}"
                 f"  (cost={out['estimated_cost']} rows={out['estimated_rows']})")
    # A RelOp's children are RelOps one operator element down (NestedLoops/RelOp, Sort/RelOp...).
    children = [c for op in node for c in op if c.tag == node.tag]
    out["children"] = [_relop(c, lines, depth + 1) for c in children]
    return out


def _num(value: str | None) -> float | None:
    return None if value is None else float(value)


_STRING = re.compile(r"N?'(?:[^']|'')*'")
_PARAMETER = re.compile(r"(?<![@\w])@\w")


def parameter_list(text: str) -> tuple[str, str]:
    """A parameterized text as Query Store and the plan cache keep it, '(@P1 int,@P2 nvarchar(40))SELECT ...',
    split into its declarations and its statement; ('', text) when it has none."""
    stripped = text.lstrip()
    if not stripped.startswith("(@"):
        return "", text
    depth = 0
    for i, ch in enumerate(stripped):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return stripped[1:i], stripped[i + 1:].lstrip()
    return "", text


def for_parsing(text: str) -> str:
    """What sqlglot vets: the statement without its parameter list."""
    return parameter_list(text)[1]


async def explain(conn: Connection, text: str, analyze: bool) -> dict[str, Any]:
    """The estimated plan: SET SHOWPLAN_XML ON in its own batch compiles the statement without running it.
    A stored text's parameter list is declared in the same batch, so its @parameters are planned as
    unknown values: the generic plan, as PostgreSQL's force_generic_plan gives."""
    if analyze:
        raise NotOnThisEngine("EXPLAIN ANALYZE is not offered on SQL Server: the actual plan "
                              "(SET STATISTICS XML ON) runs the statement")
    declarations, statement = parameter_list(text)
    if not declarations and _PARAMETER.search(_STRING.sub("''", text)):
        raise PlanRefused("a text with @parameters but no (@name type, ...) list has no types to plan with "
                          "on SQL Server: give the query with literals, or its stored text")
    batch = f"DECLARE {declarations};\n{statement}" if declarations else statement
    try:
        xml = await conn.showplan_xml(batch)  # type: ignore[attr-defined]
    except Exception as e:
        if is_statement_timeout(e) or not _is_server_error(e):
            raise
        raise PlanRefused(f"the server refused to plan it: {e}") from None
    trees, lines = plan_tree(xml)
    return {"plan": trees, "text": "\n".join(lines), "showplan_xml": xml}


def _is_server_error(error: BaseException) -> bool:
    """pyodbc reports a compile error as SQLSTATE 42000/42S02/... (class 42: syntax or access)."""
    return bool(error.args) and str(error.args[0]).startswith("42")


# One batch, so the check and the KILL cannot be split by the session id being reused in between.
# KILL takes no variable, so the (integer) id is in the text; login_time is the session's, start_time
# its request's: either confirms it is still the one /activity showed. No match: no result set at all.
KILL_BATCH = """SET NOCOUNT ON;
IF EXISTS (SELECT 1 FROM sys.dm_exec_sessions AS s
           LEFT JOIN sys.dm_exec_requests AS r ON r.session_id = s.session_id
           WHERE s.session_id = {id} AND s.is_user_process = 1
             AND (ABS(DATEDIFF(MILLISECOND, s.login_time, CAST(? AS datetime2))) < 4
                  OR ABS(DATEDIFF(MILLISECOND, r.start_time, CAST(? AS datetime2))) < 4))
BEGIN
    KILL {id};
    SELECT 1 AS killed;
END;"""


async def kill(target: Target, limits: SessionLimits, session_id: int, started_at: datetime, terminate: bool) -> bool:
    """KILL, only if the id still names the session logged in (or the request started) then. SQL Server has
    no way to stop another session's statement and keep the session: cancel is refused."""
    if not terminate:
        raise NotOnThisEngine("SQL Server cannot cancel another session's statement without ending the "
                              "session: use :terminate (KILL)")
    from collectors.engines.sqlserver import open_writable
    conn = await open_writable(target, limits)
    try:
        at = started_at.replace(tzinfo=None)  # login_time and start_time are the server's local time
        rows = await conn.fetch(KILL_BATCH.format(id=int(session_id)), at, at)
        return bool(rows and rows[0]["killed"])
    finally:
        await conn.close()


LIVE = register_live(LiveOps(family="sqlserver", dialect="tsql",
                             sessions=partial(sessions_from, sql=SESSIONS_SQL, session=session),
                             explain=explain, kill=kill, for_parsing=for_parsing))
