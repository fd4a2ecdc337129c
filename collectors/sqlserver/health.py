"""Basic health of a SQL Server instance: version, edition, uptime, AG role, connection headroom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.rows import num
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, Result, Sample, Scope, Severity

# 'user connections' = 0 means "as many as the edition allows", which is 32,767; @@MAX_CONNECTIONS
# reports the effective limit either way.
SQL = """
SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(64)) AS product_version,
       CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition,
       CAST(SERVERPROPERTY('ProductLevel') AS nvarchar(32)) AS product_level,
       DATEDIFF(SECOND, si.sqlserver_start_time, SYSDATETIME()) AS uptime_s,
       (SELECT COUNT(*) FROM sys.dm_exec_sessions WHERE is_user_process = 1) AS connections,
       @@MAX_CONNECTIONS AS max_connections,
       (SELECT CAST(value_in_use AS int) FROM sys.configurations WHERE name = 'user connections') AS user_connections_setting,
       CASE WHEN EXISTS (SELECT 1 FROM sys.dm_hadr_availability_replica_states
                         WHERE is_local = 1 AND role = 2) THEN 1 ELSE 0 END AS is_secondary
FROM sys.dm_os_sys_info AS si
"""

THRESHOLDS = {"connections_warning_pct": 80, "connections_critical_pct": 95}
SESSIONS_SQL = ("SELECT login_name, host_name, program_name, status, COUNT(*) AS sessions "
                "FROM sys.dm_exec_sessions WHERE is_user_process = 1 "
                "GROUP BY login_name, host_name, program_name, status ORDER BY sessions DESC")


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    if not rows:
        return result
    t = ctx.thresholds
    row = rows[0]
    result.samples += [
        Sample("up", 1.0),
        Sample("uptime_seconds", num(row.get("uptime_s"))),
        Sample("connections_used", num(row.get("connections"))),
        Sample("connections_max", num(row.get("max_connections"))),
    ]
    if (f := _connection_finding(row, t)) is not None:
        result.findings.append(f)
    result.state = {"version": row.get("product_version"), "edition": row.get("edition"),
                    "secondary": bool(row.get("is_secondary"))}
    return result


def _connection_finding(row: Mapping[str, Any], t: Mapping[str, Any]) -> Finding | None:
    configured = int(num(row.get("user_connections_setting")))
    limit = configured or int(num(row.get("max_connections"), 32_767)) or 32_767
    used = int(num(row.get("connections")))
    pct = 100.0 * used / limit
    if pct < t["connections_warning_pct"]:
        return None
    return Finding(
        check="connections_near_limit",
        object="server",
        severity=Severity.critical if pct >= t["connections_critical_pct"] else Severity.warning,
        title=f"{used:,} of {limit:,} user connections in use ({pct:.0f}%)",
        details={"connections": used, "max_connections": limit, "used_pct": round(pct, 1),
                 "user_connections_setting": row.get("user_connections_setting"), "sql": SESSIONS_SQL},
        recommendation="Find the application holding idle sessions (the query groups them by login, host "
                       "and program) and fix its pool size. Raising 'user connections' "
                       "(sp_configure, then a restart) only moves the wall; each connection costs memory.",
    )


SPEC = register(CollectorSpec(
    name="health",
    engine="sqlserver",
    description="Reachability, version, uptime, availability-group role, connection headroom",
    sql={11_000_000: SQL},
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
