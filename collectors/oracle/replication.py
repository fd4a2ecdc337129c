"""Data Guard. On a standby: V$DATAGUARD_STATS transport and apply lag (interval strings such as
'+00 00:00:05') and how fresh they are. On a primary: V$ARCHIVE_DEST_STATUS per remote
destination (status, gap, error). Findings `replication_lag`, `replication_stopped`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.rows import by_kind, num
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Sample, Scope, Severity

# TIME_COMPUTED and DATUM_TIME are text in the standby's local clock ('MM/DD/YYYY HH24:MI:SS'):
# compare them with SYSDATE on the same host rather than with our clock.
STANDBY_SQL = """
SELECT name, value, unit, time_computed, datum_time,
       ROUND((SYSDATE - TO_DATE(time_computed, 'MM/DD/YYYY HH24:MI:SS')) * 86400) AS computed_age_s,
       ROUND((SYSDATE - TO_DATE(datum_time, 'MM/DD/YYYY HH24:MI:SS')) * 86400) AS datum_age_s,
       (SELECT db_unique_name FROM v$database) AS db_unique_name
FROM v$dataguard_stats
WHERE name IN ('transport lag', 'apply lag')
"""

PRIMARY_SQL = """
SELECT dest_id, dest_name, status, type, database_mode, recovery_mode, gap_status, error,
       db_unique_name, destination, "ARCHIVED_SEQ#" AS archived_seq, "APPLIED_SEQ#" AS applied_seq
FROM v$archive_dest_status
WHERE status <> 'INACTIVE' AND type <> 'LOCAL'
"""

THRESHOLDS = {"lag_warning_s": 30, "lag_critical_s": 300, "stale_after_s": 300}
_INTERVAL = re.compile(r"^\s*([+-])?(\d+)\s+(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)\s*$")


def interval_seconds(text: str | None) -> float | None:
    """'+00 00:00:05' -> 5.0, '+01 02:00:00' -> 93600.0; None for NULL or anything else."""
    m = _INTERVAL.match(text or "")
    if m is None:
        return None
    sign, days, hours, minutes, seconds = m.groups()
    value = int(days) * 86_400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return -value if sign == "-" else value


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = ctx.thresholds
    kinds = by_kind(rows)
    result = Result()
    standby = kinds.get("standby", [])
    if standby:
        _standby(standby, t, result)
    for dest in kinds.get("primary", []):
        _destination(dest, result)
    return result


def _standby(rows: Sequence[Mapping[str, Any]], t: Mapping[str, Any], result: Result) -> None:
    stats = {r["name"]: r for r in rows}
    name = rows[0].get("db_unique_name") or "standby"
    lags = {k: interval_seconds(r.get("value")) for k, r in stats.items()}
    for k, v in lags.items():
        if v is not None:
            result.samples.append(Sample(f"{k.replace(' ', '_')}_seconds", v, name))
    transport = stats.get("transport lag", {})
    stale = [k for k, r in stats.items()
             if num(r.get("computed_age_s")) >= t["stale_after_s"] or num(r.get("datum_age_s")) >= t["stale_after_s"]]
    if lags.get("transport lag") is None or stale:
        result.findings.append(Finding(
            check="replication_stopped", object=name, severity=Severity.critical,
            title=f"Standby {name} is not receiving redo" + (" (lag statistics are stale)" if stale else ""),
            details={"transport_lag": transport.get("value"), "apply_lag": stats.get("apply lag", {}).get("value"),
                     "time_computed": transport.get("time_computed"), "datum_time": transport.get("datum_time"),
                     "stale": stale, "sql": STANDBY_SQL.strip()},
            recommendation="On the primary check V$ARCHIVE_DEST_STATUS for this destination's error; on the "
                           "standby check that managed recovery runs (V$DATAGUARD_PROCESS / V$MANAGED_STANDBY) "
                           "and the alert log. DGMGRL> SHOW DATABASE VERBOSE shows the broker's view.",
        ))
        return
    lag = max(v for v in lags.values() if v is not None)
    if lag >= t["lag_warning_s"]:
        result.findings.append(Finding(
            check="replication_lag", object=name,
            severity=Severity.critical if lag >= t["lag_critical_s"] else Severity.warning,
            title=f"Standby {name} is {lag:,.0f} s behind (transport {stats.get('transport lag', {}).get('value')}, "
                  f"apply {stats.get('apply lag', {}).get('value')})",
            details={"lag_seconds": lag, "transport_lag_seconds": lags.get("transport lag"),
                     "apply_lag_seconds": lags.get("apply lag"), "time_computed": transport.get("time_computed"),
                     "sql": STANDBY_SQL.strip()},
            recommendation="Transport lag points at the network or the primary's redo rate; apply lag at the "
                           "standby's I/O or a delayed apply (DELAY attribute). A failover now would lose "
                           "or wait for this much redo.",
        ))


def _destination(row: Mapping[str, Any], result: Result) -> None:
    name = row.get("db_unique_name") or row.get("dest_name")
    if row.get("archived_seq") is not None and row.get("applied_seq") is not None:
        result.samples.append(Sample("redo_sequences_not_applied",
                                     max(0.0, num(row["archived_seq"]) - num(row["applied_seq"])), name))
    gap = row.get("gap_status") or "NO GAP"
    if row.get("status") == "VALID" and gap in ("NO GAP", ""):
        return
    result.findings.append(Finding(
        check="replication_stopped", object=name,
        severity=Severity.critical if row.get("status") != "VALID" or gap == "UNRESOLVABLE GAP" else Severity.warning,
        title=f"Redo shipping to {name} ({row.get('dest_name')}) is {row.get('status')}, {gap}",
        details={"status": row.get("status"), "gap_status": gap, "error": row.get("error"),
                 "destination": row.get("destination"), "recovery_mode": row.get("recovery_mode"),
                 "sql": PRIMARY_SQL.strip()},
        recommendation="Fix the cause in the error column (network, standby down, FRA full), then "
                       f"ALTER SYSTEM SET log_archive_dest_state_{row.get('dest_id')}=ENABLE; the standby "
                       "fetches the missing logs itself once it can reach the primary (FAL).",
    ))


async def run(conn: Connection, ctx: Context) -> Result:
    sql = STANDBY_SQL if conn.is_standby else PRIMARY_SQL
    kind = "standby" if conn.is_standby else "primary"
    return transform([{**r, "kind": kind} for r in await conn.fetch(sql)], ctx)


SPEC = register(CollectorSpec(
    name="replication",
    engine="oracle",
    description="Data Guard transport/apply lag on standbys, archive destination health on primaries",
    sql={110200: STANDBY_SQL},
    transform=transform,
    run=run,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
