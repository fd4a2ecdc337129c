"""Query statistics from performance_schema statement digests: per-interval deltas and findings.

Counters in events_statements_summary_by_digest only grow until the table is truncated or the
server restarts, so each run stores the cumulative counters in Result.state and reports the
difference. We never TRUNCATE the table ourselves: other tools (sys schema, PMM) read it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.mysql._common import (
    MARIADB_MIN,
    MYSQL_57,
    PICOSECONDS_PER_MS,
    as_int,
    in_scope,
)
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, QueryStat, Result, Severity

_DIGESTS = """
SELECT s.ps_enabled, s.digest_consumer, s.uptime_s, s.server_now,
       d.SCHEMA_NAME AS schema_name, d.DIGEST AS digest, LEFT(d.DIGEST_TEXT, 2000) AS digest_text,
       d.COUNT_STAR AS calls, d.SUM_TIMER_WAIT AS timer_ps, d.SUM_ROWS_EXAMINED AS rows_examined,
       d.SUM_ROWS_SENT AS rows_sent, d.SUM_NO_INDEX_USED AS no_index_used,
       d.SUM_CREATED_TMP_DISK_TABLES AS tmp_disk_tables, d.FIRST_SEEN AS first_seen
FROM (SELECT @@performance_schema AS ps_enabled,
             (SELECT ENABLED FROM performance_schema.setup_consumers
              WHERE NAME = 'statements_digest') AS digest_consumer,
             (SELECT VARIABLE_VALUE FROM {status_table} WHERE VARIABLE_NAME = 'Uptime') AS uptime_s,
             NOW() AS server_now) s
LEFT JOIN (SELECT * FROM performance_schema.events_statements_summary_by_digest
           WHERE DIGEST IS NOT NULL
           ORDER BY SUM_TIMER_WAIT DESC LIMIT {limit}) d ON 1 = 1
"""
# MySQL 5.7+ moved status to performance_schema.global_status (information_schema's copy is gone
# in 8.0); MariaDB keeps information_schema.GLOBAL_STATUS, which works even with the PS off.
SQL = {
    MYSQL_57: _DIGESTS.format(status_table="performance_schema.global_status", limit=2000),
    MARIADB_MIN: _DIGESTS.format(status_table="information_schema.GLOBAL_STATUS", limit=2000),
}

# Same rules as PostgreSQL: slow = mean >= 100 ms over >= 100 calls in the last hour; regression =
# last hour's mean >= 2x its own 7-day baseline. full_scan: most executions used no index and
# examined >= 100 rows per row returned (what sys.statements_with_full_table_scans highlights).
THRESHOLDS = {
    "slow_mean_ms": 100.0,
    "slow_min_calls": 100,
    "regression_factor": 2.0,
    "regression_min_calls": 50,
    "regression_min_mean_ms": 1.0,
    "regression_min_baseline_h": 24.0,
    "full_scan_min_share": 0.5,
    "full_scan_min_examined_per_sent": 100.0,
    "full_scan_min_rows_examined": 10_000,
    "full_scan_min_calls": 10,
}
RECENT_S = 3600.0          # the "last hour" window, kept as an exponentially decayed sum
BASELINE_S = 7 * 86400.0   # the 7-day baseline, likewise
FORGET_S = 7 * 86400.0     # drop a digest's window once unseen this long

# Cumulative counters per digest, in this order, in state["digests"][key][:6].
COUNTERS = ("calls", "timer_ps", "rows_examined", "rows_sent", "no_index_used", "tmp_disk_tables")
# state["windows"][key]: recent calls, ms, examined, sent, no_index; baseline calls, ms; since; seen.
R_CALLS, R_MS, R_EXAM, R_SENT, R_NOIDX, B_CALLS, B_MS, SINCE, SEEN = range(9)

PS_STEPS = (
    "1. Set performance_schema=ON in the [mysqld] section of the server config (on RDS/Aurora: "
    "performance_schema=1 in the DB parameter group; MariaDB ships with it OFF).\n"
    "2. Restart the server (the variable is not dynamic).\n"
    "3. Check the digest consumer: UPDATE performance_schema.setup_consumers SET ENABLED = 'YES' "
    "WHERE NAME = 'statements_digest';"
)


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    if not rows:
        return result
    facts = rows[0]
    if not as_int(facts["ps_enabled"]) or str(facts.get("digest_consumer") or "YES").upper() != "YES":
        result.findings.append(_ps_disabled_finding(facts))
        return result
    t = ctx.thresholds
    prev = ctx.previous if isinstance(ctx.previous, dict) and ctx.previous.get("v") == 1 else None
    uptime = as_int(facts["uptime_s"])
    restarted = prev is None or uptime < prev["uptime_s"]
    now_s = ctx.now.timestamp()
    interval_s = max(0.0, now_s - prev["at"]) if prev else 0.0
    old_windows = prev["windows"] if prev else {}
    windows = {k: w for k, w in old_windows.items() if now_s - w[SEEN] < FORGET_S}
    digests: dict[str, list[Any]] = {}
    for row in rows:
        if row.get("digest") is None or not in_scope(row["schema_name"], ctx):
            continue
        key = f"{row['digest']}:{row['schema_name'] or ''}"
        counters = [as_int(row[c]) for c in COUNTERS]
        digests[key] = [*counters, str(row["first_seen"])]
        base = None if restarted else _baseline(prev, key, row)
        if base is None:
            continue
        delta = [c - b for c, b in zip(counters, base)]
        if delta[0] <= 0:
            continue
        result.query_stats.append(_query_stat(row, delta, interval_s))
        windows[key] = _roll(windows.get(key), delta, interval_s, now_s, result, row, t)
    result.state = {"v": 1, "uptime_s": uptime, "server_now": str(facts["server_now"]),
                    "at": now_s, "digests": digests, "windows": windows}
    return result


def _baseline(prev: Mapping[str, Any], key: str, row: Mapping[str, Any]) -> list[int] | None:
    """The counters this interval's delta is measured from, None when there is no sound one.

    A digest first seen after the previous run started from zero within this interval. One whose
    FIRST_SEEN changed, or whose counters went down, was truncated or evicted: new baseline.
    """
    old = prev["digests"].get(key)
    first_seen = str(row["first_seen"])
    if old is None:
        return [0] * len(COUNTERS) if first_seen >= prev["server_now"] else None
    if old[-1] != first_seen or any(as_int(row[c]) < o for c, o in zip(COUNTERS, old)):
        return None
    return old[:-1]


def _query_stat(row: Mapping[str, Any], delta: list[int], interval_s: float) -> QueryStat:
    return QueryStat(
        query_id=row["digest"], user="", database=row["schema_name"] or "",
        calls=delta[0], total_ms=delta[1] / PICOSECONDS_PER_MS, rows=delta[3],
        interval_s=interval_s, text=row["digest_text"],
    )


def _roll(window: list[float] | None, delta: list[int], interval_s: float, now_s: float,
          result: Result, row: Mapping[str, Any], t: Mapping[str, Any]) -> list[float]:
    """Fold one interval into the decayed windows, judging regression before the baseline moves."""
    w = list(window) if window else [0.0] * 7 + [now_s, now_s]
    # Decay by the time since this digest's window last moved, not just this interval: a query
    # idle for a day must not carry yesterday's calls into "the last hour".
    elapsed = max(interval_s, now_s - w[SEEN]) if window else interval_s
    recent = math.exp(-elapsed / RECENT_S)
    base = math.exp(-elapsed / BASELINE_S)
    ms = delta[1] / PICOSECONDS_PER_MS
    for i, d in zip((R_CALLS, R_MS, R_EXAM, R_SENT, R_NOIDX), (delta[0], ms, delta[2], delta[3], delta[4])):
        w[i] = w[i] * recent + d
    result.findings += [f for f in (_slow(row, w, t), _regression(row, w, now_s, t), _full_scan(row, w, t)) if f]
    w[B_CALLS] = w[B_CALLS] * base + delta[0]
    w[B_MS] = w[B_MS] * base + ms
    w[SEEN] = now_s
    return [round(x, 3) for x in w]


def _object(row: Mapping[str, Any]) -> str:
    return f"{row['schema_name'] or '-'}/{row['digest']}"


def _short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= 80 else text[:77] + "..."


def _slow(row: Mapping[str, Any], w: list[float], t: Mapping[str, Any]) -> Finding | None:
    calls, mean = w[R_CALLS], w[R_MS] / max(w[R_CALLS], 1e-9)
    if calls < t["slow_min_calls"] or mean < t["slow_mean_ms"]:
        return None
    return Finding(
        check="slow_query", object=_object(row), severity=Severity.warning,
        title=f"Query averages {mean:,.0f} ms over {calls:,.0f} calls in the last hour: {_short(row['digest_text'])}",
        details={"mean_ms": round(mean, 2), "calls": round(calls), "schema": row["schema_name"],
                 "digest": row["digest"], "query": row["digest_text"], "sql": _digest_sql(row)},
        recommendation="EXPLAIN the statement with real parameters; look for full scans, filesorts "
                       "and temporary tables, and add the index its WHERE/ORDER BY needs.",
    )


def _regression(row: Mapping[str, Any], w: list[float], now_s: float, t: Mapping[str, Any]) -> Finding | None:
    if w[B_CALLS] <= 0 or (now_s - w[SINCE]) < t["regression_min_baseline_h"] * 3600:
        return None
    recent, baseline = w[R_MS] / max(w[R_CALLS], 1e-9), w[B_MS] / w[B_CALLS]
    if (w[R_CALLS] < t["regression_min_calls"] or recent < t["regression_min_mean_ms"]
            or recent < t["regression_factor"] * baseline):
        return None
    return Finding(
        check="query_regression", object=_object(row), severity=Severity.warning,
        title=f"Query got {recent / max(baseline, 1e-9):.1f}x slower: {recent:,.1f} ms now vs "
              f"{baseline:,.1f} ms baseline: {_short(row['digest_text'])}",
        details={"recent_mean_ms": round(recent, 2), "baseline_mean_ms": round(baseline, 2),
                 "recent_calls": round(w[R_CALLS]), "baseline_days": round((now_s - w[SINCE]) / 86400, 1),
                 "digest": row["digest"], "query": row["digest_text"], "sql": _digest_sql(row)},
        recommendation="Compare today's EXPLAIN with the plan it used to get: a changed plan after "
                       "ANALYZE TABLE, data growth, a dropped index or a deploy are the usual causes.",
    )


def _full_scan(row: Mapping[str, Any], w: list[float], t: Mapping[str, Any]) -> Finding | None:
    calls = w[R_CALLS]
    share = w[R_NOIDX] / max(calls, 1e-9)
    per_sent = w[R_EXAM] / max(w[R_SENT], 1.0)
    if (calls < t["full_scan_min_calls"] or share < t["full_scan_min_share"]
            or w[R_EXAM] < t["full_scan_min_rows_examined"] or per_sent < t["full_scan_min_examined_per_sent"]):
        return None
    return Finding(
        check="full_scan_query", object=_object(row), severity=Severity.warning,
        title=f"Query scans without an index: {per_sent:,.0f} rows examined per row returned: {_short(row['digest_text'])}",
        details={"calls": round(calls), "no_index_share": round(share, 2), "rows_examined": round(w[R_EXAM]),
                 "rows_sent": round(w[R_SENT]), "examined_per_sent": round(per_sent, 1),
                 "digest": row["digest"], "query": row["digest_text"], "sql": _digest_sql(row)},
        recommendation="EXPLAIN it: type=ALL means a full table scan. Add an index on the columns "
                       "in its WHERE clause (ALTER TABLE ... ADD INDEX, online with ALGORITHM=INPLACE, "
                       "LOCK=NONE on InnoDB; it still costs I/O and replica lag on large tables).",
    )


def _digest_sql(row: Mapping[str, Any]) -> str:
    return ("SELECT * FROM performance_schema.events_statements_summary_by_digest "
            f"WHERE DIGEST = '{row['digest']}'")


def _ps_disabled_finding(facts: Mapping[str, Any]) -> Finding:
    off = not as_int(facts["ps_enabled"])
    return Finding(
        check="performance_schema_disabled", object="server", severity=Severity.info,
        title=("performance_schema is OFF" if off else "The statements_digest consumer is disabled")
        + ": no query statistics for this instance",
        details={"performance_schema": facts["ps_enabled"], "statements_digest": facts.get("digest_consumer"),
                 "sql": "SELECT @@performance_schema; SELECT * FROM performance_schema.setup_consumers"},
        recommendation=PS_STEPS,
    )


SPEC = register(CollectorSpec(
    name="query_stats",
    engine="mysql",
    description="Statement digest deltas, slow_query, query_regression, full_scan_query",
    sql=SQL,
    transform=transform,
    interval_s=300,
    timeout_s=30,
    thresholds=THRESHOLDS,
    needs=('schemas',),
))
