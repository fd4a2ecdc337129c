"""Basic health: version, uptime, role, connection headroom, wraparound, pg_stat_statements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, Result, Sample, Scope, Severity

SQL = """
select d.datname,
       age(d.datfrozenxid)::bigint as xid_age,
       current_setting('server_version') as version,
       extract(epoch from now() - pg_postmaster_start_time())::bigint as uptime_s,
       pg_is_in_recovery() as standby,
       (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as connections,
       current_setting('max_connections')::int as max_connections,
       current_setting('superuser_reserved_connections')::int as reserved_connections,
       exists(select 1 from pg_extension where extname = 'pg_stat_statements') as pgss_installed,
       current_setting('shared_preload_libraries') ~ 'pg_stat_statements' as pgss_loaded,
       current_database() as current_db
from pg_database d
where d.datallowconn
order by d.datname
"""

# Autovacuum forces anti-wraparound vacuums at 200M (autovacuum_freeze_max_age) and the server
# stops accepting writes near 2^31 (about 2.1 billion); see "Preventing Transaction ID Wraparound
# Failures" in the PostgreSQL docs. Warn well past the autovacuum point, go critical at half-way.
THRESHOLDS = {
    "connections_warning_pct": 80,
    "connections_critical_pct": 95,
    "xid_age_warning": 500_000_000,
    "xid_age_critical": 1_000_000_000,
}

PGSS_STEPS = (
    "1. Add pg_stat_statements to shared_preload_libraries in postgresql.conf "
    "(on RDS/Aurora: the DB parameter group).\n"
    "2. Restart the server.\n"
    "3. In this database run: CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"
)


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    if not rows:
        return result
    t = ctx.thresholds
    first = rows[0]
    result.samples += [
        Sample("up", 1.0),
        Sample("uptime_seconds", float(first["uptime_s"])),
        Sample("connections_used", float(first["connections"])),
        Sample("connections_max", float(first["max_connections"])),
        Sample("server_version_num", float(ctx.server_version)),
        Sample("is_standby", 1.0 if first["standby"] else 0.0),
    ]
    result.findings += _connection_findings(first, t)
    for row in rows:
        result.samples.append(Sample("xid_age", float(row["xid_age"]), row["datname"]))
        if (f := _wraparound_finding(row, t)) is not None:
            result.findings.append(f)
    if (f := _pgss_finding(first)) is not None:
        result.findings.append(f)
    return result


def _connection_findings(row: Mapping[str, Any], t: Mapping[str, Any]) -> list[Finding]:
    usable = max(1, row["max_connections"] - row["reserved_connections"])
    pct = 100.0 * row["connections"] / usable
    if pct < t["connections_warning_pct"]:
        return []
    severity = Severity.critical if pct >= t["connections_critical_pct"] else Severity.warning
    return [Finding(
        check="connections_near_limit",
        object="server",
        severity=severity,
        title=f"{row['connections']} of {usable} usable connections in use ({pct:.0f}%)",
        details={"connections": row["connections"], "max_connections": row["max_connections"],
                 "superuser_reserved_connections": row["reserved_connections"], "used_pct": round(pct, 1),
                 "sql": "select usename, application_name, state, count(*) from pg_stat_activity group by 1,2,3 order by 4 desc"},
        recommendation="Put a connection pooler (PgBouncer, RDS Proxy) in front of the clients or "
                       "find the application leaking idle sessions; raising max_connections costs "
                       "memory per backend and needs a restart.",
    )]


def _wraparound_finding(row: Mapping[str, Any], t: Mapping[str, Any]) -> Finding | None:
    age = row["xid_age"]
    if age < t["xid_age_warning"]:
        return None
    severity = Severity.critical if age >= t["xid_age_critical"] else Severity.warning
    return Finding(
        check="xid_wraparound",
        object=row["datname"],
        severity=severity,
        title=f"Database {row['datname']} is {age:,} transactions old ({100 * age / 2**31:.0f}% of wraparound)",
        details={"datfrozenxid_age": age, "wraparound_at": 2**31,
                 "sql": "select relname, age(relfrozenxid) from pg_class where relkind in ('r','m','t') order by 2 desc limit 10"},
        recommendation=f"Run VACUUM (FREEZE, VERBOSE) on the oldest tables in {row['datname']} and "
                       "check for long-running transactions, abandoned replication slots or "
                       "prepared transactions holding back the xmin horizon.",
    )


def _pgss_finding(row: Mapping[str, Any]) -> Finding | None:
    if row["pgss_installed"] and row["pgss_loaded"]:
        return None
    missing = []
    if not row["pgss_loaded"]:
        missing.append("not in shared_preload_libraries")
    if not row["pgss_installed"]:
        missing.append(f"extension not created in {row['current_db']}")
    return Finding(
        check="pg_stat_statements_missing",
        object=row["current_db"],
        severity=Severity.info,
        title="pg_stat_statements is not available: no query statistics for this instance",
        details={"installed": row["pgss_installed"], "preloaded": row["pgss_loaded"], "missing": missing},
        recommendation=PGSS_STEPS,
    )


SPEC = register(CollectorSpec(
    name="health",
    engine="postgres",
    description="Reachability, version, uptime, connection headroom, wraparound age, pg_stat_statements",
    sql={90600: SQL},
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
