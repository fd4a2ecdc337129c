"""Basic health of an Oracle instance: version, uptime, database role and open mode, sessions
and processes against their limits (`connections_near_limit`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.rows import num
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, Result, Sample, Scope, Severity

SQL = """
SELECT i.instance_name, i.host_name, i.version, i.startup_time, i.status, d.database_role, d.open_mode,
       ROUND((SYSDATE - i.startup_time) * 86400) AS uptime_s,
       r.resource_name, r.current_utilization, r.max_utilization, TRIM(r.limit_value) AS limit_value
FROM v$instance i
CROSS JOIN v$database d
CROSS JOIN v$resource_limit r
WHERE r.resource_name IN ('sessions', 'processes')
"""

THRESHOLDS = {"connections_warning_pct": 80, "connections_critical_pct": 95}
SESSIONS_SQL = ("SELECT username, machine, program, status, COUNT(*) AS sessions FROM v$session "
                "WHERE type = 'USER' GROUP BY username, machine, program, status ORDER BY sessions DESC")


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    if not rows:
        return result
    t = ctx.thresholds
    first = rows[0]
    result.samples += [Sample("up", 1.0), Sample("uptime_seconds", num(first.get("uptime_s")))]
    for row in rows:
        used = num(row.get("current_utilization"))
        result.samples.append(Sample(f"{row['resource_name']}_used", used))
        if (f := _limit_finding(row, t)) is not None:
            result.findings.append(f)
    result.state = {"version": first.get("version"), "role": first.get("database_role"),
                    "open_mode": first.get("open_mode")}
    return result


def _limit_finding(row: Mapping[str, Any], t: Mapping[str, Any]) -> Finding | None:
    limit_text = str(row.get("limit_value") or "").strip()
    if not limit_text.isdigit() or int(limit_text) == 0:
        return None  # UNLIMITED
    limit, used = int(limit_text), int(num(row.get("current_utilization")))
    pct = 100.0 * used / limit
    if pct < t["connections_warning_pct"]:
        return None
    resource = row["resource_name"]
    return Finding(
        check="connections_near_limit", object=resource,
        severity=Severity.critical if pct >= t["connections_critical_pct"] else Severity.warning,
        title=f"{used:,} of {limit:,} {resource} in use ({pct:.0f}%)",
        details={"resource": resource, "current": used, "limit": limit, "high_water": row.get("max_utilization"),
                 "used_pct": round(pct, 1), "sql": SESSIONS_SQL},
        recommendation=f"At the limit new logins fail (ORA-00018 sessions / ORA-00020 processes). Find the "
                       f"client holding idle sessions (the query groups them) and fix its pool; raising the "
                       f"{resource} parameter needs SCOPE=SPFILE and a restart.",
    )


SPEC = register(CollectorSpec(
    name="health",
    engine="oracle",
    description="Reachability, version, uptime, Data Guard role, sessions and processes against limits",
    sql={110200: SQL},
    transform=transform,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
