"""Query statistics from sys.dm_exec_query_stats (or Query Store when it is on): per-interval
deltas per query_hash, `slow_query` and `query_regression`. Never clears the plan cache or
Query Store (DBCC FREEPROCCACHE / sp_query_store_flush_db would wipe other tools' data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.query_baseline import (
    QUERY_THRESHOLDS,
    Baseline,
    counter_deltas,
    regression,
    trim_baselines,
    update_baseline,
)
from collectors.common.rows import as_utc, num
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, QueryStat, Result, Severity

# Plans of one normalized statement share a query_hash; summing over them and over sql_handles
# gives one row per statement. Times are in microseconds. Text is the statement's own slice of
# the batch (offsets are in bytes of UTF-16). A plan leaving the cache makes the sums shrink.
DMV_SQL = """
SELECT TOP (500)
       CONVERT(varchar(18), qs.query_hash, 1) AS query_hash,
       'plan_cache' AS source,
       SUM(qs.execution_count) AS execution_count,
       SUM(qs.total_worker_time) AS total_worker_time,
       SUM(qs.total_elapsed_time) AS total_elapsed_time,
       SUM(qs.total_logical_reads) AS total_logical_reads,
       SUM(qs.total_physical_reads) AS total_physical_reads,
       SUM(qs.total_rows) AS total_rows,
       COUNT(*) AS plan_count,
       MIN(qs.creation_time) AS first_cached,
       MAX(qs.last_execution_time) AS last_execution_time,
       MAX(DB_NAME(CONVERT(int, st.dbid))) AS database_name,
       MAX(LEFT(SUBSTRING(st.text, qs.statement_start_offset / 2 + 1,
           (CASE qs.statement_end_offset WHEN -1 THEN DATALENGTH(st.text)
                 ELSE qs.statement_end_offset END - qs.statement_start_offset) / 2 + 1), 2000)) AS query_text
FROM sys.dm_exec_query_stats AS qs
CROSS APPLY sys.dm_exec_sql_text(qs.sql_handle) AS st
GROUP BY qs.query_hash
ORDER BY SUM(qs.total_elapsed_time) DESC
"""

QUERY_STORE_STATE_SQL = """
SELECT actual_state_desc, readonly_reason FROM sys.database_query_store_options
"""

# Query Store keeps per-interval averages; summing count x avg over intervals that started after
# a fixed anchor gives counters that only grow, so the same delta logic applies. The anchor moves
# once a day (a new baseline) to keep the query cheap.
QUERY_STORE_SQL = """
SELECT TOP (500)
       CONVERT(varchar(18), q.query_hash, 1) AS query_hash,
       'query_store' AS source,
       SUM(rs.count_executions) AS execution_count,
       SUM(rs.count_executions * rs.avg_cpu_time) AS total_worker_time,
       SUM(rs.count_executions * rs.avg_duration) AS total_elapsed_time,
       SUM(rs.count_executions * rs.avg_logical_io_reads) AS total_logical_reads,
       SUM(rs.count_executions * rs.avg_physical_io_reads) AS total_physical_reads,
       SUM(rs.count_executions * rs.avg_rowcount) AS total_rows,
       COUNT(DISTINCT p.plan_id) AS plan_count,
       MIN(rs.first_execution_time) AS first_cached,
       MAX(rs.last_execution_time) AS last_execution_time,
       DB_NAME() AS database_name,
       MAX(LEFT(qt.query_sql_text, 2000)) AS query_text
FROM sys.query_store_runtime_stats AS rs
JOIN sys.query_store_runtime_stats_interval AS i ON i.runtime_stats_interval_id = rs.runtime_stats_interval_id
JOIN sys.query_store_plan AS p ON p.plan_id = rs.plan_id
JOIN sys.query_store_query AS q ON q.query_id = p.query_id
JOIN sys.query_store_query_text AS qt ON qt.query_text_id = q.query_text_id
WHERE i.start_time >= ?
GROUP BY q.query_hash
ORDER BY SUM(rs.count_executions * rs.avg_duration) DESC
"""

COUNTERS = ("execution_count", "total_elapsed_time", "total_worker_time", "total_logical_reads",
            "total_physical_reads", "total_rows")
THRESHOLDS = {**QUERY_THRESHOLDS, "use_query_store": True}
TOP_SQL = ("SELECT TOP (20) qs.execution_count, qs.total_elapsed_time / qs.execution_count / 1000.0 AS mean_ms, "
           "qs.query_hash, qs.query_plan_hash FROM sys.dm_exec_query_stats AS qs "
           "WHERE qs.query_hash = {h} ORDER BY mean_ms DESC")


def _key(row: Mapping[str, Any]) -> str:
    return f"{row['source']}:{row['query_hash']}"


def _snapshot(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    return {_key(r): {c: num(r.get(c)) for c in COUNTERS} for r in rows if r.get("query_hash")}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = ctx.thresholds
    prev = ctx.previous or {}
    now_s = ctx.now.timestamp()
    snapshot = _snapshot(rows)
    interval_s = now_s - prev["taken_at"] if prev.get("taken_at") else 0.0
    deltas = counter_deltas(snapshot, prev.get("counters")) if interval_s > 0 else {}
    baselines = {k: v for k, v in (prev.get("baselines") or {}).items() if k in snapshot}
    result = Result()
    by_key = {_key(r): r for r in rows if r.get("query_hash")}
    for key, d in deltas.items():
        if d["execution_count"] <= 0:
            continue
        row = by_key[key]
        result.query_stats.append(_query_stat(row, d, interval_s))
        base = update_baseline(baselines.get(key), d["execution_count"], d["total_elapsed_time"] / 1000.0,
                               interval_s, now_s)
        baselines[key] = base.as_list()
        if (f := _regression_finding(row, base, now_s, t)) is not None:
            result.findings.append(f)
    result.findings += [f for r in rows if (f := _slow_finding(r, t)) is not None]
    result.state = {"taken_at": now_s, "counters": snapshot, "anchor": prev.get("anchor"),
                    "baselines": trim_baselines(baselines, t["baseline_max_statements"])}
    return result


def _query_stat(row: Mapping[str, Any], d: Mapping[str, float], interval_s: float) -> QueryStat:
    return QueryStat(
        query_id=str(row["query_hash"]), user="", database=row.get("database_name") or "",
        calls=int(d["execution_count"]), total_ms=d["total_elapsed_time"] / 1000.0, rows=int(d["total_rows"]),
        shared_blks_hit=int(max(0.0, d["total_logical_reads"] - d["total_physical_reads"])),
        shared_blks_read=int(d["total_physical_reads"]), interval_s=interval_s,
        text=row.get("query_text"),
    )


def _slow_finding(row: Mapping[str, Any], t: Mapping[str, Any]) -> Finding | None:
    calls = num(row.get("execution_count"))
    if calls < t["slow_query_min_calls"]:
        return None
    mean_ms = num(row.get("total_elapsed_time")) / calls / 1000.0
    if mean_ms < t["slow_query_ms"]:
        return None
    return Finding(
        check="slow_query", object=str(row["query_hash"]),
        severity=Severity.critical if mean_ms >= 10 * t["slow_query_ms"] else Severity.warning,
        title=f"Query {row['query_hash']} averages {mean_ms:,.0f} ms over {int(calls):,} executions",
        details={"mean_ms": round(mean_ms, 2), "calls": int(calls), "source": row["source"],
                 "cpu_ms_per_call": round(num(row.get("total_worker_time")) / calls / 1000.0, 2),
                 "logical_reads_per_call": round(num(row.get("total_logical_reads")) / calls),
                 "plans": row.get("plan_count"), "cached_since": str(as_utc(row.get("first_cached"))),
                 "database": row.get("database_name"), "query": row.get("query_text"),
                 "sql": TOP_SQL.format(h=row["query_hash"])},
        recommendation="Look at the plan (sys.dm_exec_query_plan for the plan_handle, or the Query Store "
                       "report) for scans and key lookups; the index_advice collector lists missing "
                       "indexes for this database. If several plans exist, compare them for a "
                       "parameter-sensitive plan before forcing one.",
    )


def _regression_finding(row: Mapping[str, Any], base: Baseline, now_s: float,
                        t: Mapping[str, Any]) -> Finding | None:
    evidence = regression(base, now_s, t)
    if evidence is None:
        return None
    return Finding(
        check="query_regression", object=str(row["query_hash"]), severity=Severity.warning,
        title=f"Query {row['query_hash']} is {evidence['factor']}x slower than its 7-day baseline "
              f"({evidence['mean_ms_last_hour']} ms vs {evidence['mean_ms_baseline']} ms)",
        details={**evidence, "plans": row.get("plan_count"), "source": row["source"],
                 "query": row.get("query_text"), "sql": TOP_SQL.format(h=row["query_hash"])},
        recommendation="A new plan is the usual cause: compare query_plan_hash values in "
                       "sys.dm_exec_query_stats or the Query Store 'Regressed Queries' report; "
                       "sp_query_store_force_plan pins the good plan (keep an eye on it after "
                       "data changes). Also check for blocking and statistics updated with a low sample.",
    )


async def run(conn: Connection, ctx: Context) -> Result:
    """Use Query Store where it is on in this database, otherwise the plan cache."""
    t = ctx.thresholds
    use_qs = False
    if t["use_query_store"] and conn.server_version >= 13_000_000:
        state = await conn.fetch(QUERY_STORE_STATE_SQL)
        use_qs = bool(state) and state[0].get("actual_state_desc") in ("READ_WRITE", "READ_ONLY")
    if not use_qs:
        return transform(await conn.fetch(SPEC.sql_for(conn.server_version)), ctx)
    anchor = _anchor(ctx)
    ctx.previous = {**(ctx.previous or {}), "anchor": anchor}
    rows = await conn.fetch(QUERY_STORE_SQL, as_utc(anchor).replace(tzinfo=None))
    return transform(rows, ctx)


def _anchor(ctx: Context) -> str:
    """Start of the Query Store window: kept for a day, then moved to now (a new baseline)."""
    anchor = (ctx.previous or {}).get("anchor")
    if anchor and (ctx.now - as_utc(anchor)).total_seconds() < 86_400:
        return anchor
    return ctx.now.replace(microsecond=0).isoformat()


SPEC = register(CollectorSpec(
    name="query_stats",
    engine="sqlserver",
    description="Per-interval query statistics from the plan cache or Query Store; slow and regressed queries",
    sql={11_000_000: DMV_SQL},
    transform=transform,
    run=run,
    interval_s=300,
    timeout_s=30,
    thresholds=THRESHOLDS,
))
