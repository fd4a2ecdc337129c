"""Query statistics from V$SQLSTATS: per-interval deltas per (sql_id, plan_hash_value),
`slow_query` and `query_regression`. Never flushes the shared pool (that would wipe every
tool's statistics and force hard parses)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.query_baseline import (
    QUERY_THRESHOLDS,
    counter_deltas,
    regression,
    trim_baselines,
    update_baseline,
)
from collectors.common.rows import num
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, QueryStat, Result, Severity

_COLUMNS = """sql_id, plan_hash_value, executions, elapsed_time, cpu_time, buffer_gets, disk_reads,
       rows_processed, last_active_time, SUBSTR(sql_text, 1, 1000) AS sql_text"""

# Times in V$SQLSTATS are microseconds; a statement aging out of the shared pool disappears and
# comes back with small counters, which the delta logic treats as a new baseline.
SQL_11G = f"""
SELECT * FROM (
  SELECT {_COLUMNS}
  FROM v$sqlstats
  ORDER BY elapsed_time DESC
) WHERE ROWNUM <= 500
"""

SQL_12C = f"""
SELECT {_COLUMNS}
FROM v$sqlstats
ORDER BY elapsed_time DESC
FETCH FIRST 500 ROWS ONLY
"""

COUNTERS = ("executions", "elapsed_time", "cpu_time", "buffer_gets", "disk_reads", "rows_processed")
THRESHOLDS = dict(QUERY_THRESHOLDS)
PLAN_SQL = "SELECT * FROM TABLE(DBMS_XPLAN.DISPLAY_CURSOR('{sql_id}', NULL, 'TYPICAL'))"


def _key(row: Mapping[str, Any]) -> str:
    return f"{row['sql_id']}:{row['plan_hash_value']}"


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = ctx.thresholds
    prev = ctx.previous or {}
    now_s = ctx.now.timestamp()
    by_key = {_key(r): r for r in rows if r.get("sql_id")}
    snapshot = {k: {c: num(r.get(c)) for c in COUNTERS} for k, r in by_key.items()}
    interval_s = now_s - prev["taken_at"] if prev.get("taken_at") else 0.0
    deltas = counter_deltas(snapshot, prev.get("counters")) if interval_s > 0 else {}
    baselines = {k: v for k, v in (prev.get("baselines") or {}).items() if k in snapshot}
    result = Result()
    for key, d in deltas.items():
        if d["executions"] <= 0:
            continue
        row = by_key[key]
        result.query_stats.append(QueryStat(
            query_id=key, user="", database="", calls=int(d["executions"]),
            total_ms=d["elapsed_time"] / 1000.0, rows=int(d["rows_processed"]),
            shared_blks_hit=int(max(0.0, d["buffer_gets"] - d["disk_reads"])),
            shared_blks_read=int(d["disk_reads"]), interval_s=interval_s, text=row.get("sql_text"),
        ))
        base = update_baseline(baselines.get(key), d["executions"], d["elapsed_time"] / 1000.0, interval_s, now_s)
        baselines[key] = base.as_list()
        if (evidence := regression(base, now_s, t)) is not None:
            result.findings.append(_regression_finding(row, evidence))
    result.findings += [f for r in by_key.values() if (f := _slow_finding(r, t)) is not None]
    result.state = {"taken_at": now_s, "counters": snapshot,
                    "baselines": trim_baselines(baselines, t["baseline_max_statements"])}
    return result


def _slow_finding(row: Mapping[str, Any], t: Mapping[str, Any]) -> Finding | None:
    calls = num(row.get("executions"))
    if calls < t["slow_query_min_calls"]:
        return None
    mean_ms = num(row.get("elapsed_time")) / calls / 1000.0
    if mean_ms < t["slow_query_ms"]:
        return None
    return Finding(
        check="slow_query", object=str(row["sql_id"]),
        severity=Severity.critical if mean_ms >= 10 * t["slow_query_ms"] else Severity.warning,
        title=f"SQL {row['sql_id']} averages {mean_ms:,.0f} ms over {int(calls):,} executions",
        details={"mean_ms": round(mean_ms, 2), "calls": int(calls), "plan_hash_value": row.get("plan_hash_value"),
                 "cpu_ms_per_call": round(num(row.get("cpu_time")) / calls / 1000.0, 2),
                 "buffer_gets_per_call": round(num(row.get("buffer_gets")) / calls),
                 "rows_per_call": round(num(row.get("rows_processed")) / calls, 1),
                 "query": row.get("sql_text"), "sql": PLAN_SQL.format(sql_id=row["sql_id"])},
        recommendation="Read the plan (the SQL above) for full scans and high buffer gets per row; the "
                       "SQL Tuning Advisor (DBMS_SQLTUNE, needs the Tuning Pack licence) can propose "
                       "indexes or a SQL profile.",
    )


def _regression_finding(row: Mapping[str, Any], evidence: Mapping[str, Any]) -> Finding:
    return Finding(
        check="query_regression", object=f"{row['sql_id']}:{row['plan_hash_value']}", severity=Severity.warning,
        title=f"SQL {row['sql_id']} (plan {row['plan_hash_value']}) is {evidence['factor']}x slower than its "
              f"7-day baseline ({evidence['mean_ms_last_hour']} ms vs {evidence['mean_ms_baseline']} ms)",
        details={**evidence, "plan_hash_value": row.get("plan_hash_value"), "query": row.get("sql_text"),
                 "sql": f"SELECT plan_hash_value, executions, elapsed_time FROM v$sqlstats WHERE sql_id = '{row['sql_id']}'"},
        recommendation="Compare this plan_hash_value with earlier ones (DBA_HIST_SQLSTAT if licensed); "
                       "a SQL plan baseline (DBMS_SPM.LOAD_PLANS_FROM_CURSOR_CACHE) can pin the good plan. "
                       "Check for stale or freshly gathered optimizer statistics first.",
    )


SPEC = register(CollectorSpec(
    name="query_stats",
    engine="oracle",
    description="Per-interval statement statistics from V$SQLSTATS; slow and regressed SQL",
    sql={110200: SQL_11G, 120100: SQL_12C},
    transform=transform,
    interval_s=300,
    timeout_s=30,
    thresholds=THRESHOLDS,
))
