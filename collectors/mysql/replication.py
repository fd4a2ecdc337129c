"""Replication from the replica's side: threads, errors, lag net of a deliberate delay; Aurora lag.

MySQL renamed SHOW SLAVE STATUS to SHOW REPLICA STATUS in 8.0.22 and its columns (Source_*,
Replica_*); MariaDB accepts SHOW REPLICA STATUS from 10.5.1 but keeps the Slave_*/Master columns,
and SHOW ALL ... STATUS lists every named connection (multi-source), so both spellings are read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.mysql._common import MARIADB_MIN, MYSQL_57, as_int, fetch_snapshot, pick, snapshot_of
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Sample, Scope, Severity

REPLICA_SQL = {
    MYSQL_57: "SHOW SLAVE STATUS",
    80022: "SHOW REPLICA STATUS",
    MARIADB_MIN: "SHOW ALL SLAVES STATUS",
    100501: "SHOW ALL REPLICAS STATUS",
}
# Aurora MySQL: every instance of the cluster, the writer's SESSION_ID is 'MASTER_SESSION_ID'.
AURORA_SQL = {MYSQL_57: """
SELECT SERVER_ID AS server_id, SESSION_ID AS session_id, REPLICA_LAG_IN_MILLISECONDS AS lag_ms,
       LAST_UPDATE_TIMESTAMP AS last_update
FROM information_schema.replica_host_status
"""}

# Same defaults as PostgreSQL's replication_lag: warn at 30 s, critical at 5 min.
THRESHOLDS = {"lag_warning_s": 30, "lag_critical_s": 300}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    snap = snapshot_of(rows)
    if snap is None:
        return result
    t = ctx.thresholds
    for row in snap.get("replica", []):
        status = replica_status(row)
        if status["lag_s"] is not None:
            result.samples.append(Sample("replication_lag_seconds", float(status["lag_s"]), status["object"]))
        finding = _thread_finding(status) or _lag_finding(status, t)
        if finding is not None:
            result.findings.append(finding)
    for row in snap.get("aurora", []):
        if row["session_id"] == "MASTER_SESSION_ID" or row["lag_ms"] is None:
            continue
        lag = float(row["lag_ms"]) / 1000
        result.samples.append(Sample("replication_lag_seconds", lag, row["server_id"]))
        if (f := _aurora_lag_finding(row, lag, t)) is not None:
            result.findings.append(f)
    return result


def replica_status(row: Mapping[str, Any]) -> dict[str, Any]:
    """One replication channel in flavour-neutral words; lag is net of the configured SQL_Delay."""
    channel = pick(row, "Channel_Name", "Connection_name", default="") or ""
    host = pick(row, "Source_Host", "Master_Host", default="")
    port = pick(row, "Source_Port", "Master_Port", default="")
    behind = pick(row, "Seconds_Behind_Source", "Seconds_Behind_Master")
    delay = as_int(row.get("SQL_Delay"))
    return {
        "object": channel or f"{host}:{port}",
        "channel": channel,
        "source": f"{host}:{port}",
        "io_running": str(pick(row, "Replica_IO_Running", "Slave_IO_Running", default="")),
        "sql_running": str(pick(row, "Replica_SQL_Running", "Slave_SQL_Running", default="")),
        "seconds_behind": behind,
        # Seconds_Behind_* counts the deliberate MASTER_DELAY/SOURCE_DELAY too; only the rest is lag.
        "lag_s": None if behind is None else max(0, as_int(behind) - delay),
        "sql_delay": delay,
        "sql_remaining_delay": row.get("SQL_Remaining_Delay"),
        "last_io_errno": as_int(row.get("Last_IO_Errno")),
        "last_io_error": row.get("Last_IO_Error") or "",
        "last_sql_errno": as_int(row.get("Last_SQL_Errno")),
        "last_sql_error": row.get("Last_SQL_Error") or "",
        "state": pick(row, "Replica_SQL_Running_State", "Slave_SQL_Running_State", default=""),
        "gtid_received": pick(row, "Retrieved_Gtid_Set", "Gtid_IO_Pos", default=""),
        "gtid_applied": pick(row, "Executed_Gtid_Set", "Gtid_Slave_Pos", default=""),
    }


def _evidence(s: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("source", "io_running", "sql_running", "seconds_behind", "sql_delay", "last_io_errno",
            "last_io_error", "last_sql_errno", "last_sql_error", "gtid_received", "gtid_applied")
    return {k: s[k] for k in keys} | {"sql": "SHOW REPLICA STATUS  -- SHOW SLAVE STATUS before MySQL 8.0.22"}


def _thread_finding(s: Mapping[str, Any]) -> Finding | None:
    """broken: the applier stopped on an error (the replica no longer matches its source);
    stopped: a thread is not running for any other reason (STOP REPLICA, source unreachable)."""
    if s["io_running"] == "Yes" and s["sql_running"] == "Yes":
        return None
    if s["sql_running"] != "Yes" and s["last_sql_errno"]:
        return Finding(
            check="replication_broken", object=s["object"], severity=Severity.critical,
            title=f"Replication from {s['source']} is broken: SQL thread stopped on error {s['last_sql_errno']}",
            details=_evidence(s),
            recommendation="Read Last_SQL_Error and compare the row on source and replica. Skipping the "
                           "event (sql_slave_skip_counter, or an empty GTID transaction) hides the "
                           "divergence: prefer re-cloning the replica or fixing the row, then START REPLICA.",
        )
    stopped = [name for name, state in (("IO", s["io_running"]), ("SQL", s["sql_running"])) if state != "Yes"]
    error = s["last_io_error"] or s["last_sql_error"]
    return Finding(
        check="replication_stopped", object=s["object"], severity=Severity.critical,
        title=f"Replication from {s['source']}: {' and '.join(stopped)} thread not running"
              + (f" ({error[:120]})" if error else ""),
        details=_evidence(s),
        recommendation="If nobody stopped it on purpose, run START REPLICA (START SLAVE before MySQL "
                       "8.0.22 / MariaDB 10.5.1); an IO thread stuck 'Connecting' means the source is "
                       "unreachable or the replication user's password changed (see Last_IO_Error).",
    )


def _lag_finding(s: Mapping[str, Any], t: Mapping[str, Any]) -> Finding | None:
    lag = s["lag_s"]
    if lag is None or lag < t["lag_warning_s"]:
        return None
    delay = f" beyond its configured {s['sql_delay']} s delay" if s["sql_delay"] else ""
    return Finding(
        check="replication_lag", object=s["object"],
        severity=Severity.critical if lag >= t["lag_critical_s"] else Severity.warning,
        title=f"Replica is {lag:,} s behind {s['source']}{delay}",
        details=_evidence(s) | {"lag_s": lag, "sql_state": s["state"]},
        recommendation="Look at what the SQL thread is doing (Replica_SQL_Running_State, SHOW "
                       "PROCESSLIST): a long transaction or DDL on the source, a table without a "
                       "primary key under row-based replication, or a lock held on the replica. "
                       "More parallel workers (replica_parallel_workers / slave_parallel_threads) "
                       "help when the source writes to many tables.",
    )


def _aurora_lag_finding(row: Mapping[str, Any], lag: float, t: Mapping[str, Any]) -> Finding | None:
    if lag < t["lag_warning_s"]:
        return None
    return Finding(
        check="replication_lag", object=str(row["server_id"]),
        severity=Severity.critical if lag >= t["lag_critical_s"] else Severity.warning,
        title=f"Aurora reader {row['server_id']} is {lag:,.1f} s behind the writer",
        details={"replica_lag_ms": row["lag_ms"], "last_update": str(row["last_update"]),
                 "sql": "SELECT * FROM information_schema.replica_host_status"},
        recommendation="Aurora readers share storage and normally lag under 100 ms: sustained lag "
                       "means the reader is overloaded (CPU, long queries holding old page versions) "
                       "or far smaller than the writer.",
    )


async def run(conn: Connection, ctx: Context) -> Result:
    queries: dict[str, Mapping[int, str]] = {"replica": REPLICA_SQL}
    if ctx.engine == "aurora-mysql":
        queries["aurora"] = AURORA_SQL
    return transform([await fetch_snapshot(conn, queries, optional=("replica", "aurora"))], ctx)


SPEC = register(CollectorSpec(
    name="replication",
    engine="mysql",
    description="Replica threads, errors and lag (net of SQL_Delay); Aurora reader lag",
    sql=REPLICA_SQL,
    run=run,
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
