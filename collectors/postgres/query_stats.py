"""Query statistics from pg_stat_statements: per-interval deltas, slow queries, regressions.

Counters in pg_stat_statements only grow until something resets them, so every run diffs against
the counters the previous run carried in Result.state. Anything that looks like a reset (the
view's stats_reset moved, a counter went down, an entry was re-created, a key we had not seen)
starts a new baseline for that key instead of storing a negative or made-up delta. We never call
pg_stat_statements_reset(): that would wipe every other tool's data (PgHero does it).

When the view is full it deallocates its least-used entries, and before 17 (per-entry stats_since)
an evicted entry that grew back cannot be told from growth. pg_stat_statements_info.dealloc (14+)
counts those passes: findings from an hour that saw any say so, since their counts may miss
executions, and point at pg_stat_statements.max.

State shape (plain JSON so the store can keep it)::

    {"v": 1, "at": epoch_s, "stats_reset": iso | None, "dealloc": int | None,
     "ev": [[epoch_s, deallocation passes], ...],                  # runs of the last hour that saw any
     "counters": {"<queryid>|<user>": "calls|total_ms|rows|hit|read|temp|io_ms|since|text_pending"},
     "queries": {"<queryid>": {"r": [[epoch_s, calls, ms], ...],   # deltas of the last hour
                               "d": [[day, calls, ms], ...],       # older deltas, one bucket a day
                               "t": "first 200 chars of the text"}}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from operator import itemgetter
from typing import Any

from collectors.registry import register
from collectors.spec import (
    CollectorSpec,
    Connection,
    Context,
    Finding,
    QueryStat,
    Result,
    Sample,
    Severity,
)

_SELECT = """
select s.queryid::text as queryid, coalesce(r.rolname, s.userid::text) as username,
       d.datname, sum(s.calls)::bigint as calls, {total}::float8 as total_ms,
       sum(s.rows)::bigint as rows, sum(s.shared_blks_hit)::bigint as shared_blks_hit,
       sum(s.shared_blks_read)::bigint as shared_blks_read,
       sum(s.temp_blks_written)::bigint as temp_blks_written, {io}::float8 as io_ms,
       {since} as stats_since, {reset} as stats_reset, {dealloc}::bigint as dealloc,
       nullif(current_setting('pg_stat_statements.max', true), '')::int as pgss_max,
       -- read with the counters: an ALTER EXTENSION ... UPDATE is seen without a lookup per run
       (select e.extversion from pg_extension e where e.extname = 'pg_stat_statements') as extversion
from {{pgss}}.pg_stat_statements(false) s
join pg_database d on d.oid = s.dbid and d.datname = current_database()
left join pg_roles r on r.oid = s.userid
where s.queryid is not null
group by s.queryid, s.userid, r.rolname, d.datname
"""
_NO_SINCE = "null::timestamptz"
# Scalar subqueries: pg_stat_statements_info is one row, read in the same statement (no round trip).
_INFO_RESET, _INFO_DEALLOC = ("(select stats_reset from {pgss}.pg_stat_statements_info)",
                              "(select dealloc from {pgss}.pg_stat_statements_info)")
# Keyed by the lowest version whose pg_stat_statements has these columns: 13 split total_time
# into exec + plan time, 14 added pg_stat_statements_info, 17 renamed blk_read_time to
# shared_blk_read_time and added per-entry stats_since (a re-created entry gets a new one).
SQL = {
    120000: _SELECT.format(total="sum(s.total_time)", io="sum(s.blk_read_time + s.blk_write_time)",
                           since=_NO_SINCE, reset=_NO_SINCE, dealloc="null"),
    130000: _SELECT.format(total="sum(s.total_exec_time + s.total_plan_time)",
                           io="sum(s.blk_read_time + s.blk_write_time)", since=_NO_SINCE, reset=_NO_SINCE,
                           dealloc="null"),
    140000: _SELECT.format(total="sum(s.total_exec_time + s.total_plan_time)",
                           io="sum(s.blk_read_time + s.blk_write_time)", since=_NO_SINCE,
                           reset=_INFO_RESET, dealloc=_INFO_DEALLOC),
    170000: _SELECT.format(total="sum(s.total_exec_time + s.total_plan_time)",
                           io="sum(s.shared_blk_read_time + s.shared_blk_write_time)",
                           since="min(s.stats_since)", reset=_INFO_RESET, dealloc=_INFO_DEALLOC),
}

TEXT_SQL = """
select distinct s.queryid::text as queryid, left(s.query, {cap}) as query
from {pgss}.pg_stat_statements(true) s
join pg_database d on d.oid = s.dbid and d.datname = current_database()
where s.queryid = any($1::bigint[])
"""

EXTENSION_SQL = """
select quote_ident(n.nspname) as schema, e.extversion
from pg_extension e join pg_namespace n on n.oid = e.extnamespace
where e.extname = 'pg_stat_statements'
"""

# A query has to be both slow and frequent to matter: 100 ms x 100 calls an hour is 10 s of
# server time an hour. Regressions compare the last hour with the query's own past week
# (pganalyze's approach) and ignore sub-10 ms queries whose means are mostly noise.
THRESHOLDS = {
    "slow_query_mean_ms": 100.0,
    "slow_query_min_calls": 100,
    "regression_factor": 2.0,
    "regression_min_calls": 100,
    "regression_min_baseline_calls": 100,
    "regression_min_mean_ms": 10.0,
    "tracked_queries": 200,
    "text_max_chars": 10_000,
}

_COUNTERS = ("calls", "total_ms", "rows", "shared_blks_hit", "shared_blks_read", "temp_blks_written", "io_ms")
_HAS_IO_MS = "io_ms" in {f.name for f in fields(QueryStat)}


def key_of(row: Mapping[str, Any]) -> str:
    return f"{row['queryid']}|{row['username']}"


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _usable_previous(ctx: Context) -> dict[str, Any] | None:
    prev = ctx.previous
    if isinstance(prev, Mapping) and prev.get("v") == 1 and ctx.now.timestamp() > prev.get("at", 0):
        return dict(prev)
    return None


def _same_view(rows: Sequence[Mapping[str, Any]], prev: Mapping[str, Any]) -> bool:
    """No pg_stat_statements_reset() of the whole view (14+: stats_reset moves) since the previous run."""
    reset = _iso(rows[0]["stats_reset"]) if rows else prev.get("stats_reset")
    return reset == prev.get("stats_reset")


def counter_row(value: str | list | None) -> list | None:
    """A stored counter row as [calls, total_ms, rows, hit, read, temp, io_ms, since, text_pending].

    Kept as one string per statement ("10|50.0|...|since|1"): a worker holds one for every statement
    of every instance, and a string is a tenth of a list of nine numbers and never walked by the
    garbage collector. States written before keep their lists; both read the same."""
    if not isinstance(value, str):
        return value
    p = value.split("|")
    return [*(float(x) if x else None for x in p[:7]), p[7] or None, p[8] == "1"]


def _counter_text(values: tuple, since: str | None, pending: bool) -> str:
    return "|".join([*("" if v is None else repr(v) if type(v) is float else str(v) for v in values),
                     since or "", "1" if pending else "0"])


def _previous_counters(rows: Sequence[Mapping[str, Any]], prev: dict[str, Any] | None) -> dict[str, list]:
    """The counters to diff against; empty when there is no baseline or the view was reset."""
    if prev is None or not _same_view(rows, prev):
        return {}
    return prev.get("counters", {})


def _evictions(rows: Sequence[Mapping[str, Any]], prev: Mapping[str, Any] | None) -> int:
    """Deallocation passes of the view since the previous run (14+); 0 when that is unknown."""
    now = rows[0].get("dealloc") if rows else None
    old = prev.get("dealloc") if prev else None
    if now is None or old is None:
        return 0
    # A reset of the view zeroes dealloc too: every pass it counts came after the previous run.
    return now if now < old or not _same_view(rows, prev) else now - old


def _regrowth_visible(rows: Sequence[Mapping[str, Any]], prev: Mapping[str, Any] | None) -> bool:
    """The view evicted since a still valid baseline: an entry absent from that baseline was created
    after it (new, or evicted and grown back from zero), so all of its counters are this interval's."""
    return prev is not None and _evictions(rows, prev) > 0 and _same_view(rows, prev)


def _delta(old: list | None, values: tuple, since: str | None) -> list[float] | None:
    """Counter deltas since `old`, or None when this key needs a new baseline."""
    if old is None or old[7] != since:
        return None
    delta = [float(v or 0) - float(o or 0) for v, o in zip(values, old)]
    # Timing sums can wobble by float rounding; a real drop in calls or rows means a reset.
    if min(delta[0], delta[2], delta[3], delta[4], delta[5]) < 0 or delta[1] < -1.0:
        return None
    return delta


def _query_stat(row: Mapping[str, Any], delta: list[float], interval_s: float, text: str | None) -> QueryStat:
    extra = {"io_ms": max(0.0, delta[6])} if _HAS_IO_MS else {}
    return QueryStat(
        query_id=row["queryid"], user=row["username"], database=row["datname"],
        calls=int(delta[0]), total_ms=max(0.0, delta[1]), rows=int(delta[2]),
        shared_blks_hit=int(delta[3]), shared_blks_read=int(delta[4]), temp_blks_written=int(delta[5]),
        interval_s=interval_s, text=text, **extra,
    )


# One C-level call per row instead of seven lookups (a sweep runs this for every statement of
# every database).
_ROW_COUNTERS = itemgetter(*_COUNTERS)


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """Deltas against ctx.previous, then findings over the rolling per-query windows."""
    t = ctx.thresholds
    prev = _usable_previous(ctx)
    old_counters, regrown = _previous_counters(rows, prev), _regrowth_visible(rows, prev)
    now = ctx.now.timestamp()
    interval_s = round(now - prev["at"], 3) if prev else 0.0
    result, counters, per_query = Result(), {}, {}
    for row in rows:
        key = key_of(row)
        old = counter_row(old_counters.get(key))
        values, since = _ROW_COUNTERS(row), _iso(row["stats_since"])
        delta = [float(v or 0) for v in values] if old is None and regrown else _delta(old, values, since)
        pending = True if delta is None or old is None else bool(old[8])
        if delta is not None and delta[0] > 0:
            text = row.get("query") if pending else None
            text = text[: t["text_max_chars"]] if text else None
            result.query_stats.append(_query_stat(row, delta, interval_s, text))
            pending = pending and text is None
            _add_delta(per_query, row["queryid"], delta[0], delta[1], text)
        counters[key] = _counter_text(values, since, pending)
    queries = _advance(prev.get("queries", {}) if prev else {}, per_query, now)
    sums = {qid: _sums(q) for qid, q in queries.items()}
    evicted = _eviction_window(prev, _evictions(rows, prev), now)
    result.findings += _noting_evictions(_findings(queries, sums, t), evicted, rows)
    dealloc = rows[0].get("dealloc") if rows else None
    if dealloc is not None:
        result.samples.append(Sample("pg_stat_statements_dealloc_total", float(dealloc)))
    result.state = {"v": 1, "at": now, "stats_reset": _iso(rows[0]["stats_reset"]) if rows else None,
                    "dealloc": dealloc, "ev": evicted,
                    "counters": counters, "queries": _trim(queries, sums, t["tracked_queries"])}
    return result

HOUR, DAY, BASELINE_DAYS = 3600, 86400, 7


def _add_delta(per_query: dict[str, list], queryid: str, calls: float, ms: float, text: str | None) -> None:
    q = per_query.setdefault(queryid, [0.0, 0.0, None])
    q[0] += calls
    q[1] += ms
    if text and q[2] is None:
        q[2] = text[:200]


def _advance(old: Mapping[str, Any], per_query: Mapping[str, list], now: float) -> dict[str, dict]:
    """Add this run's deltas; fold deltas older than an hour into day buckets; forget > 7 days."""
    out = {}
    cutoff = now - HOUR
    oldest_day = int((now - BASELINE_DAYS * DAY) // DAY)
    for qid in set(old) | set(per_query):
        q = old.get(qid) or {}
        recent, days = q.get("r", []), q.get("d", [])
        new = per_query.get(qid)
        if (not recent or min(map(_TS, recent)) > cutoff) and _days_in_order(days, oldest_day):
            # Nothing to fold or forget (the usual case): share the entries, nothing mutates them.
            keep, daily = list(recent), list(days)
            if new is not None:
                keep.append([now, new[0], round(new[1], 3)])
        else:
            keep, daily = _fold(recent, days, new, now, oldest_day)
        if keep or daily:
            out[qid] = {"r": keep, "d": daily, "t": q.get("t") or (new[2] if new is not None else None)}
    return out


def _days_in_order(days: Sequence, oldest_day: int) -> bool:
    """Day buckets already as _fold would leave them: int days, ascending, none too old."""
    last = oldest_day - 1
    for d in days:
        if type(d[0]) is not int or d[0] <= last:
            return False
        last = d[0]
    return True


def _fold(recent: Sequence, days_in: Sequence, new: list | None, now: float,
          oldest_day: int) -> tuple[list[list], list[list]]:
    days = {int(d): [c, m] for d, c, m in days_in}
    recent = list(recent)
    if new is not None:
        recent.append([now, new[0], round(new[1], 3)])
    keep = []
    for ts, c, m in recent:
        if ts > now - HOUR:
            keep.append([ts, c, m])
        else:
            bucket = days.setdefault(int(ts // DAY), [0, 0.0])
            bucket[0] += c
            bucket[1] = round(bucket[1] + m, 3)
    return keep, [[d, c, m] for d, (c, m) in sorted(days.items()) if d >= oldest_day]


_TS, _CALLS, _MS = itemgetter(0), itemgetter(1), itemgetter(2)


def _sums(q: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """Calls and ms of the last hour, then of the daily baseline; summed once per run."""
    return sum(map(_CALLS, q["r"])), sum(map(_MS, q["r"])), sum(map(_CALLS, q["d"])), sum(map(_MS, q["d"]))


def _trim(queries: dict[str, dict], sums: Mapping[str, tuple], limit: int) -> dict[str, dict]:
    """Keep the baselines of the queries that cost the most server time, so state stays small."""
    def cost(kv: tuple[str, dict]) -> float:
        s = sums[kv[0]]
        return s[1] + s[3]
    return dict(sorted(queries.items(), key=cost, reverse=True)[: int(limit)])


def _findings(queries: Mapping[str, dict], sums: Mapping[str, tuple], t: Mapping[str, Any]) -> list[Finding]:
    out = []
    for qid, q in sorted(queries.items()):
        calls, ms, base_calls, base_ms = sums[qid]
        if calls <= 0:
            continue
        mean = ms / calls
        if calls >= t["slow_query_min_calls"] and mean >= t["slow_query_mean_ms"]:
            out.append(_slow_query(qid, q.get("t"), calls, ms, t))
        if (base_calls >= t["regression_min_baseline_calls"] and calls >= t["regression_min_calls"]
                and mean >= t["regression_min_mean_ms"] and mean >= t["regression_factor"] * base_ms / base_calls):
            out.append(_regression(qid, q.get("t"), calls, mean, base_calls, base_ms / base_calls))
    return out


def _eviction_window(prev: Mapping[str, Any] | None, evictions: int, now: float) -> list[list]:
    """Deallocation passes per run over the last hour: the window slow_query and query_regression judge."""
    kept = [e for e in (prev or {}).get("ev", []) if e[0] > now - HOUR]
    return [*kept, [now, evictions]] if evictions else kept


def _noting_evictions(findings: list[Finding], evicted: Sequence[list],
                      rows: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Say in each finding that its counts may miss executions of entries the view threw away."""
    passes = sum(n for _, n in evicted)
    if not passes or not findings:
        return findings
    size = rows[0].get("pgss_max") if rows else None
    setting = f"pg_stat_statements.max ({size})" if size else "pg_stat_statements.max"
    note = (f" pg_stat_statements deallocated its least-used entries {passes} time(s) in the last hour, so "
            f"these counts may miss executions of evicted entries: {setting} is too small for this workload. "
            f"Raise it (ALTER SYSTEM SET pg_stat_statements.max = {2 * size if size else '...'}; on RDS/Aurora "
            "in the DB parameter group): it takes a restart, and every entry costs shared memory.")
    extra = {"evictions_in_window": passes, "pg_stat_statements_max": size}
    return [replace(f, details={**f.details, **extra}, recommendation=f.recommendation + note) for f in findings]


def _lookup_sql(qid: str) -> str:
    return f"select query, calls, mean_exec_time, rows from pg_stat_statements where queryid = {qid}"


def _label(qid: str, text: str | None) -> str:
    return f"{text[:80]!r}" if text else f"queryid {qid}"


def _slow_query(qid: str, text: str | None, calls: float, ms: float, t: Mapping[str, Any]) -> Finding:
    mean = ms / calls
    return Finding(
        check="slow_query", object=qid, severity=Severity.warning,
        title=f"Query {_label(qid, text)} averages {mean:,.0f} ms over {calls:,.0f} calls in the last hour",
        details={"queryid": qid, "query": text, "window": "last hour", "calls": int(calls),
                 "total_ms": round(ms, 1), "mean_ms": round(mean, 1),
                 "threshold_mean_ms": t["slow_query_mean_ms"], "threshold_calls": t["slow_query_min_calls"],
                 "sql": _lookup_sql(qid)},
        recommendation="Run EXPLAIN (ANALYZE, BUFFERS) with typical parameters (on a replica if it "
                       "writes). Look for sequential scans on large tables (see missing_index), "
                       "sorts spilling to disk (temp blocks) and row estimates far from actual; "
                       "index changes are separate reviewed DDL, never run from here.",
    )


def _regression(qid: str, text: str | None, calls: float, mean: float, base_calls: float,
                base_mean: float) -> Finding:
    return Finding(
        check="query_regression", object=qid, severity=Severity.warning,
        title=f"Query {_label(qid, text)} got {mean / base_mean:.1f}x slower: {mean:,.1f} ms "
              f"in the last hour vs {base_mean:,.1f} ms over the past week",
        details={"queryid": qid, "query": text, "calls_last_hour": int(calls), "mean_ms_last_hour": round(mean, 2),
                 "baseline_calls": int(base_calls), "baseline_mean_ms": round(base_mean, 2),
                 "baseline_window": f"up to {BASELINE_DAYS} days before the last hour", "sql": _lookup_sql(qid)},
        recommendation="Compare today's plan with the usual one (EXPLAIN, auto_explain logs): a "
                       "plan flip after ANALYZE or a data-volume change, a dropped or invalid "
                       "index, or a new parameter distribution are the usual causes. ANALYZE the "
                       "tables involved if their statistics are stale.",
    )


def keys_needing_text(rows: Sequence[Mapping[str, Any]], previous: Any) -> list[str]:
    """Queryids whose text the store has not got yet and which will produce a delta this run."""
    if not isinstance(previous, Mapping):
        return []
    old, regrown = previous.get("counters", {}), _regrowth_visible(rows, previous)
    need = set()
    for r in rows:
        o, calls = counter_row(old.get(key_of(r))), r["calls"] or 0
        if (o is None and regrown and calls > 0) or (o is not None and o[8] and calls > (o[0] or 0)):
            need.add(r["queryid"])
    return sorted(need)


def sql_level(server_version: int, extversion: str) -> int:
    """The SQL key to use: the extension's own version decides the columns, not just the server's."""
    try:
        ext = tuple(int(p) for p in extversion.split(".")[:2])
    except ValueError:
        ext = (0, 0)
    by_ext = 170000 if ext >= (1, 11) else 140000 if ext >= (1, 9) else 130000 if ext >= (1, 8) else 120000
    return min(server_version, by_ext)


def _unreadable(error: Exception) -> bool:
    # 55000: not in shared_preload_libraries; 42501: no privilege; 42883/42P01: old extension.
    return getattr(error, "sqlstate", None) in {"55000", "42501", "42883", "42P01"}


def _cached_extension(previous: Any) -> tuple[str, str] | None:
    """(schema, version) of pg_stat_statements as the previous run found it."""
    ext = previous.get("ext") if isinstance(previous, Mapping) else None
    return (ext[0], ext[1]) if isinstance(ext, list) and len(ext) == 2 else None


async def _extension(conn: Connection) -> tuple[str, str] | None:
    ext = await conn.fetch(EXTENSION_SQL)
    return (ext[0]["schema"], ext[0]["extversion"]) if ext else None


async def _counters(conn: Connection, ext: tuple[str, str]) -> list[dict[str, Any]] | None:
    """The counters under the SQL the extension's version reads; None when the view cannot be read."""
    sql = SPEC.sql_for(sql_level(conn.server_version, ext[1])).format(pgss=ext[0])
    try:
        return await conn.fetch(sql)
    except Exception as e:
        if _unreadable(e):
            return None
        raise


async def run(conn: Connection, ctx: Context) -> Result:
    """Read the counters without texts, then fetch only the texts the store still needs.

    The extension's schema and version are kept in the state: a steady run is one statement (the
    counters), and a run whose cached schema no longer answers looks it up again.
    """
    ext = _cached_extension(ctx.previous)
    rows = await _counters(conn, ext) if ext is not None else None
    if rows is None:
        if (ext := await _extension(conn)) is None:
            return Result()  # health raises pg_stat_statements_missing; saying it twice helps nobody
        if (rows := await _counters(conn, ext)) is None:
            return Result()
    if rows and rows[0]["extversion"] != ext[1]:
        ext = (ext[0], rows[0]["extversion"])  # updated: the next run reads the columns it has
    if need := keys_needing_text(rows, ctx.previous):
        cap = int(ctx.thresholds["text_max_chars"])
        texts = await conn.fetch(TEXT_SQL.format(pgss=ext[0], cap=cap), [int(q) for q in need])
        by_id = {r["queryid"]: r["query"] for r in texts}
        rows = [{**r, "query": by_id.get(r["queryid"])} for r in rows]
    result = transform(rows, ctx)
    result.state["ext"] = list(ext)
    return result


SPEC = register(CollectorSpec(
    name="query_stats",
    engine="postgres",
    description="pg_stat_statements per-interval deltas per query and user; slow_query, query_regression",
    sql=SQL,
    transform=transform,
    run=run,
    interval_s=300,
    timeout_s=30,
    thresholds=THRESHOLDS,
))
