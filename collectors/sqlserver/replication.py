"""Always On availability groups: per database replica synchronization state and health, send
and redo queues, lag in seconds; `replication_lag`, `replication_stopped`, `replica_unhealthy`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.rows import as_utc, num
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, Result, Sample, Scope, Severity

_FROM = """
FROM sys.dm_hadr_database_replica_states AS drs
JOIN sys.availability_replicas AS ar ON ar.replica_id = drs.replica_id
JOIN sys.availability_groups AS ag ON ag.group_id = drs.group_id
LEFT JOIN sys.dm_hadr_availability_replica_states AS ars ON ars.replica_id = drs.replica_id
"""

_COLUMNS = """
SELECT ag.name AS ag_name, ar.replica_server_name, ar.availability_mode_desc,
       DB_NAME(drs.database_id) AS database_name, drs.is_local,
       drs.synchronization_state_desc, drs.synchronization_health_desc,
       drs.is_suspended, drs.suspend_reason_desc,
       drs.log_send_queue_size, drs.log_send_rate, drs.redo_queue_size, drs.redo_rate,
       drs.last_commit_time, ars.role_desc, ars.connected_state_desc,
       ars.synchronization_health_desc AS replica_health_desc, ars.last_connect_error_description,
"""

# SQL Server 2012/2014: no secondary_lag_seconds; the primary flag comes from the replica's role.
SQL_2012 = _COLUMNS + """       CASE WHEN ars.role = 1 THEN 1 ELSE 0 END AS is_primary_replica,
       CAST(NULL AS bigint) AS secondary_lag_seconds
""" + _FROM

# SQL Server 2016+: secondary_lag_seconds, reported on the primary for each secondary.
SQL_2016 = _COLUMNS + """       drs.is_primary_replica, drs.secondary_lag_seconds
""" + _FROM

# Defaults as for PostgreSQL: a DBA sees one rule across the fleet.
THRESHOLDS = {"lag_warning_s": 30, "lag_critical_s": 300}
_UNHEALTHY = ("NOT_HEALTHY", "PARTIALLY_HEALTHY")


def _object(row: Mapping[str, Any]) -> str:
    return f"{row['ag_name']}/{row['replica_server_name']}/{row['database_name']}"


def lag_seconds(row: Mapping[str, Any], primaries: Mapping[tuple, Mapping[str, Any]]) -> float | None:
    """secondary_lag_seconds where the server has it; else the primary's last commit time minus
    this replica's; else the redo queue divided by the redo rate; None when nothing is known."""
    if row.get("secondary_lag_seconds") is not None:
        return float(row["secondary_lag_seconds"])
    primary = primaries.get((row["ag_name"], row["database_name"]))
    mine, theirs = as_utc(row.get("last_commit_time")), as_utc((primary or {}).get("last_commit_time"))
    if mine is not None and theirs is not None:
        return max(0.0, (theirs - mine).total_seconds())
    if num(row.get("redo_rate")) > 0:
        return num(row.get("redo_queue_size")) / num(row.get("redo_rate"))
    return None


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = ctx.thresholds
    result = Result()
    primaries = {(r["ag_name"], r["database_name"]): r for r in rows if r.get("is_primary_replica")}
    seen_replicas: set[str] = set()
    for row in rows:
        if (f := _replica_finding(row)) is not None and f.object not in seen_replicas:
            seen_replicas.add(f.object)
            result.findings.append(f)
        if row.get("is_primary_replica"):
            continue
        obj = _object(row)
        result.samples += [Sample("log_send_queue_bytes", num(row.get("log_send_queue_size")) * 1024, obj),
                           Sample("redo_queue_bytes", num(row.get("redo_queue_size")) * 1024, obj)]
        if (f := _stopped_finding(row)) is not None:
            result.findings.append(f)
            continue
        lag = lag_seconds(row, primaries)
        if lag is None:
            continue
        result.samples.append(Sample("replication_lag_seconds", lag, obj))
        if lag >= t["lag_warning_s"]:
            result.findings.append(_lag_finding(row, lag, t))
    return result


def _stopped_finding(row: Mapping[str, Any]) -> Finding | None:
    state = row.get("synchronization_state_desc") or ""
    if state != "NOT SYNCHRONIZING" and not row.get("is_suspended"):
        return None
    reason = row.get("suspend_reason_desc") if row.get("is_suspended") else None
    return Finding(
        check="replication_stopped", object=_object(row), severity=Severity.critical,
        title=f"Database {row['database_name']} on {row['replica_server_name']} is not synchronizing"
              + (f" (suspended: {reason})" if reason else ""),
        details={"synchronization_state": state, "is_suspended": bool(row.get("is_suspended")),
                 "suspend_reason": reason, "log_send_queue_kb": row.get("log_send_queue_size"),
                 "sql": (SQL_2016 + "WHERE drs.synchronization_state_desc = 'NOT SYNCHRONIZING'").strip()},
        recommendation=f"On the replica: ALTER DATABASE [{row['database_name']}] SET HADR RESUME; "
                       "then read the SQL Server error log for why data movement stopped. While it is "
                       "suspended the primary's log cannot be truncated and keeps growing.",
    )


def _replica_finding(row: Mapping[str, Any]) -> Finding | None:
    connected = row.get("connected_state_desc")
    health = row.get("replica_health_desc")
    if connected != "DISCONNECTED" and health not in _UNHEALTHY:
        return None
    obj = f"{row['ag_name']}/{row['replica_server_name']}"
    critical = connected == "DISCONNECTED" or health == "NOT_HEALTHY"
    return Finding(
        check="replica_unhealthy", object=obj, severity=Severity.critical if critical else Severity.warning,
        title=f"Availability replica {row['replica_server_name']} in {row['ag_name']} is "
              f"{'disconnected' if connected == 'DISCONNECTED' else health}",
        details={"role": row.get("role_desc"), "connected_state": connected, "synchronization_health": health,
                 "availability_mode": row.get("availability_mode_desc"),
                 "last_connect_error": row.get("last_connect_error_description"),
                 "sql": "SELECT * FROM sys.dm_hadr_availability_replica_states"},
        recommendation="Check the replica's SQL Server service, the mirroring endpoint (port 5022 by "
                       "default) and the network between replicas; a synchronous-commit replica that "
                       "is unhealthy stalls commits on the primary until it is switched to asynchronous.",
    )


def _lag_finding(row: Mapping[str, Any], lag: float, t: Mapping[str, Any]) -> Finding:
    return Finding(
        check="replication_lag", object=_object(row),
        severity=Severity.critical if lag >= t["lag_critical_s"] else Severity.warning,
        title=f"Replica {row['replica_server_name']} is {lag:,.0f} s behind for {row['database_name']}",
        details={"lag_seconds": round(lag, 1), "log_send_queue_kb": row.get("log_send_queue_size"),
                 "log_send_rate_kb_s": row.get("log_send_rate"), "redo_queue_kb": row.get("redo_queue_size"),
                 "redo_rate_kb_s": row.get("redo_rate"), "availability_mode": row.get("availability_mode_desc"),
                 "sql": SQL_2016.strip()},
        recommendation="A growing log send queue points at the network or the primary's log volume; a "
                       "growing redo queue at the secondary's I/O or readable-secondary queries blocking "
                       "redo. Failover to this replica would lose or wait for this much work.",
    )


SPEC = register(CollectorSpec(
    name="replication",
    engine="sqlserver",
    description="Always On availability groups: synchronization state, health, send/redo queues, lag",
    sql={11_000_000: SQL_2012, 13_000_000: SQL_2016},
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
