"""Health: version, uptime, connection headroom, and replicas that accept writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.mysql._common import MARIADB_MIN, MYSQL_57, as_int, snapshot_hook, snapshot_of, variables
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, Result, Sample, Scope, Severity

STATUS_SQL = ("SHOW GLOBAL STATUS WHERE Variable_name IN "
              "('Uptime', 'Threads_connected', 'Threads_running', 'Max_used_connections')")

# super_read_only exists only in MySQL (5.7.8+); MariaDB has read_only alone.
SETTINGS_SQL = {
    MYSQL_57: "SELECT VERSION() AS version, @@version_comment AS version_comment, "
              "@@max_connections AS max_connections, @@read_only AS read_only, "
              "@@super_read_only AS super_read_only, @@innodb_read_only AS innodb_read_only",
    MARIADB_MIN: "SELECT VERSION() AS version, @@version_comment AS version_comment, "
                 "@@max_connections AS max_connections, @@read_only AS read_only, "
                 "NULL AS super_read_only, @@innodb_read_only AS innodb_read_only",
}
QUERIES = {"status": {MYSQL_57: STATUS_SQL}, "settings": SETTINGS_SQL}

# Same headroom rule as the PostgreSQL health collector: warn at 80 %, critical at 95 % of
# max_connections (MySQL keeps one extra slot for CONNECTION_ADMIN/SUPER, not counted here).
THRESHOLDS = {"connections_warning_pct": 80, "connections_critical_pct": 95}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    snap = snapshot_of(rows)
    if snap is None or not snap.get("settings"):
        return result
    t = ctx.thresholds
    status = variables(snap.get("status", []))
    settings = snap["settings"][0]
    connected = as_int(status.get("threads_connected"))
    result.samples += [
        Sample("up", 1.0),
        Sample("uptime_seconds", float(as_int(status.get("uptime")))),
        Sample("connections_used", float(connected)),
        Sample("connections_max", float(as_int(settings["max_connections"]))),
        Sample("threads_running", float(as_int(status.get("threads_running")))),
    ]
    if (f := _connection_finding(connected, settings, status, t)) is not None:
        result.findings.append(f)
    if ctx.is_standby and (f := _writable_replica_finding(settings, ctx)) is not None:
        result.findings.append(f)
    return result


def _connection_finding(connected: int, settings: Mapping[str, Any], status: Mapping[str, Any],
                        t: Mapping[str, Any]) -> Finding | None:
    limit = max(1, as_int(settings["max_connections"]))
    pct = 100.0 * connected / limit
    if pct < t["connections_warning_pct"]:
        return None
    return Finding(
        check="connections_near_limit",
        object="server",
        severity=Severity.critical if pct >= t["connections_critical_pct"] else Severity.warning,
        title=f"{connected} of {limit} connections in use ({pct:.0f}%)",
        details={"threads_connected": connected, "max_connections": limit, "used_pct": round(pct, 1),
                 "max_used_connections": as_int(status.get("max_used_connections")),
                 "sql": "SELECT user, host, db, command, count(*) FROM information_schema.PROCESSLIST "
                        "GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC"},
        recommendation="Find the client holding idle connections (Command = 'Sleep' in the process "
                       "list) or put a pooler (ProxySQL, MaxScale, RDS Proxy) in front; raising "
                       "max_connections costs per-thread memory and needs the parameter changed in "
                       "the config (SET GLOBAL max_connections is lost at restart).",
    )


def _writable_replica_finding(settings: Mapping[str, Any], ctx: Context) -> Finding | None:
    if as_int(settings["read_only"]) or as_int(settings.get("innodb_read_only")):
        return None
    mysql = ctx.server_version < MARIADB_MIN
    fix = "SET GLOBAL super_read_only = ON;" if mysql else "SET GLOBAL read_only = ON;"
    return Finding(
        check="replica_not_read_only",
        object="server",
        severity=Severity.warning,
        title="This replica accepts writes (read_only is OFF)",
        details={"read_only": settings["read_only"], "super_read_only": settings.get("super_read_only"),
                 "sql": "SELECT @@read_only, @@innodb_read_only"},
        recommendation=f"{fix} and set it in the server config. A write on a replica makes it "
                       "diverge from its source and can break replication with a duplicate-key "
                       "or row-not-found error later.",
    )


SPEC = register(CollectorSpec(
    name="health",
    engine="mysql",
    description="Version, uptime, Threads_connected vs max_connections, writable replicas",
    sql=SETTINGS_SQL,
    run=snapshot_hook(QUERIES, transform),
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
