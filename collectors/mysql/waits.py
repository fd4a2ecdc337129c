"""Wait-event sampling (MySQL, MariaDB): performance_schema wait summaries as per-interval samples.

events_waits_summary_global_by_event_name only grows (until a restart or a TRUNCATE), so each run
keeps the cumulative counters in Result.state, as query_stats does, and stores the difference:
per event, how many waits and how many sessions were waiting on it on average over the interval
(seconds waited / seconds elapsed, the unit PostgreSQL's sampled wait_event_sessions counts in).
So "what was this server waiting on at 03:00" has an answer on MySQL too.

With performance_schema OFF (MariaDB's default) the table is empty: the run stores nothing and says
nothing, because query_stats already raises performance_schema_disabled once for the server.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.query_baseline import counter_deltas
from collectors.mysql._common import MARIADB_MIN, MYSQL_57, as_int
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Result, Sample, Scope

PICOSECONDS_PER_S = 1e12
# 'idle' is a thread waiting for its client to send the next statement: not the server waiting on
# anything. COUNT_STAR > 0 keeps the few hundred never-fired instruments out of every run.
_WAITS = """
SELECT s.ps_enabled, s.uptime_s, w.EVENT_NAME AS event_name, w.COUNT_STAR AS waits, w.SUM_TIMER_WAIT AS timer_ps
FROM (SELECT @@performance_schema AS ps_enabled,
             (SELECT VARIABLE_VALUE FROM {status_table} WHERE VARIABLE_NAME = 'Uptime') AS uptime_s) s
LEFT JOIN performance_schema.events_waits_summary_global_by_event_name w
       ON w.COUNT_STAR > 0 AND w.EVENT_NAME <> 'idle'
"""
# MySQL 5.7+ moved status to performance_schema.global_status; MariaDB keeps information_schema's.
SQL = {
    MYSQL_57: _WAITS.format(status_table="performance_schema.global_status"),
    MARIADB_MIN: _WAITS.format(status_table="information_schema.GLOBAL_STATUS"),
}
# The events that waited longest each get their own samples; the rest are summed per class, so a
# server with every instrument on still stores a bounded number of points per run.
TOP_EVENTS = 50


def wait_class(event_name: str) -> tuple[str, str]:
    """'wait/io/file/innodb/innodb_data_file' -> ('wait/io/file', 'innodb/innodb_data_file')."""
    parts = event_name.split("/")
    return "/".join(parts[:3]), "/".join(parts[3:]) or event_name


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """Cumulative wait counters -> per-interval samples; the first run (or one after a restart) only
    records the baseline."""
    if not rows or not as_int(rows[0]["ps_enabled"]):
        return Result()
    now_s, uptime = ctx.now.timestamp(), as_int(rows[0]["uptime_s"])
    counters = {r["event_name"]: [as_int(r["waits"]), as_int(r["timer_ps"])] for r in rows if r["event_name"]}
    result = Result(state={"v": 1, "uptime_s": uptime, "at": now_s, "counters": counters})
    prev = ctx.previous if isinstance(ctx.previous, dict) and ctx.previous.get("v") == 1 else None
    if prev is None or uptime < prev["uptime_s"] or now_s <= prev["at"]:
        return result
    # An event missing last time had not fired (COUNT_STAR = 0); one whose counters fell was truncated.
    before = {e: {"waits": v[0], "ps": v[1]} for e, v in prev["counters"].items()}
    deltas = counter_deltas({e: {"waits": v[0], "ps": v[1]} for e, v in counters.items()},
                            {e: before.get(e, {"waits": 0, "ps": 0}) for e in counters})
    result.samples = interval_samples(deltas, now_s - prev["at"])
    return result


def interval_samples(deltas: Mapping[str, Mapping[str, float]], interval_s: float) -> list[Sample]:
    fired = sorted(((e, d) for e, d in deltas.items() if d["waits"] > 0), key=lambda ed: -ed[1]["ps"])
    points: dict[str, list[float]] = {}
    rest: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for i, (event, d) in enumerate(fired):
        cls, name = wait_class(event)
        if i < TOP_EVENTS:
            points[f"{cls}:{name}"] = [d["waits"], d["ps"]]
        else:
            rest[f"{cls}:other"][0] += d["waits"]
            rest[f"{cls}:other"][1] += d["ps"]
    out = []
    for key, (waits, ps) in {**points, **rest}.items():
        out.append(Sample("wait_event_waits", float(waits), key))
        out.append(Sample("wait_event_avg_sessions", round(ps / PICOSECONDS_PER_S / interval_s, 6), key))
    return out


SPEC = register(CollectorSpec(
    name="waits",
    engine="mysql",
    description="Wait-event sampling: performance_schema wait summary deltas per wait class and event",
    sql=SQL,
    transform=transform,
    interval_s=60,
    timeout_s=10,
    scope=Scope.server,
))
