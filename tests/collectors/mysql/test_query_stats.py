"""query_stats transform: deltas, resets and findings on recorded MySQL 8 and MariaDB digests."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

from collectors.mysql import query_stats

from .conftest import ctx_for, recorded

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)
PS_PER_MS = 10**9


def _two_runs(data, thresholds=None, gap_s=300):
    first = query_stats.transform(data["digests_1"], ctx_for(query_stats.SPEC, data, now=T0, thresholds=thresholds or {}))
    second = query_stats.transform(data["digests_2"], ctx_for(query_stats.SPEC, data, now=T0 + timedelta(seconds=gap_s),
                                                                thresholds=thresholds or {}, previous=first.state))
    return first, second


def test_first_run_is_a_baseline_only(flavour):
    first = query_stats.transform(flavour["digests_1"], ctx_for(query_stats.SPEC, flavour, now=T0))
    assert first.query_stats == [] and first.findings == []
    assert len(first.state["digests"]) == len(flavour["digests_1"])
    json.dumps(first.state)  # the store keeps it as JSON


def test_mysql8_deltas_and_findings():
    data = recorded("mysql_8_0")
    _, second = _two_runs(data)
    stats = {q.query_id[:4]: q for q in second.query_stats}
    # The slow digest ran 200 more times at 250 ms; the fast one did not run; the new one is whole.
    assert (stats["3c5e"].calls, stats["3c5e"].total_ms, stats["3c5e"].rows) == (200, 50_000.0, 200)
    assert stats["9f8e"].calls == 50 and "0a1b" not in stats
    assert stats["1111"].calls == 3 and stats["1111"].interval_s == 300
    assert stats["3c5e"].database == "shop" and stats["3c5e"].text.startswith("SELECT * FROM `orders`")
    found = {(f.check, f.object.split("/")[1][:4], f.severity.value) for f in second.findings}
    assert found == {("slow_query", "3c5e", "warning"), ("full_scan_query", "9f8e", "warning")}


def test_mariadb_recorded_full_scan():
    data = recorded("mariadb_10_11")
    _, second = _two_runs(data)
    by_text = {q.text.split(" WHERE")[0]: q for q in second.query_stats}
    scan = by_text["SELECT COUNT ( * ) FROM `orders`"]
    assert scan.calls == 120 and scan.rows == 120 and scan.database == "dbf_my_rec"
    assert by_text["SELECT * FROM `orders`"].calls == 4
    assert {(f.check, f.object) for f in second.findings} == {("full_scan_query", f"dbf_my_rec/{scan.query_id}")}
    assert second.findings[0].details["examined_per_sent"] == 2000.0


def test_restart_starts_a_new_baseline(flavour):
    first = query_stats.transform(flavour["digests_1"], ctx_for(query_stats.SPEC, flavour, now=T0))
    rows = copy.deepcopy(flavour["digests_2"])
    for r in rows:
        r["uptime_s"] = "5"
    second = query_stats.transform(rows, ctx_for(query_stats.SPEC, flavour, now=T0 + timedelta(seconds=300), previous=first.state))
    assert second.query_stats == [] and second.findings == []
    assert second.state["uptime_s"] == 5


def test_truncated_digest_counters_going_down_are_not_negative_deltas():
    data = recorded("mysql_8_0")
    first = query_stats.transform(data["digests_2"], ctx_for(query_stats.SPEC, data, now=T0))
    later = copy.deepcopy(data["digests_2"])
    later[0].update(calls=7, timer_ps=7 * PS_PER_MS)          # TRUNCATE TABLE ... then 7 calls
    later[1].update(first_seen="2024-03-01 10:06:00.000000", calls=600)  # evicted and re-added
    second = query_stats.transform(later, ctx_for(query_stats.SPEC, data, now=T0 + timedelta(seconds=300), previous=first.state))
    assert all(q.calls >= 0 and q.total_ms >= 0 for q in second.query_stats)
    assert {q.query_id for q in second.query_stats} == set()


def test_performance_schema_off_and_consumer_off():
    off = [{"ps_enabled": 0, "digest_consumer": None, "uptime_s": "100", "server_now": "2024-03-01 10:00:00",
            "digest": None}]
    result = query_stats.transform(off, ctx_for(query_stats.SPEC, recorded("mariadb_10_11")))
    [f] = result.findings
    assert (f.check, f.object, f.severity.value) == ("performance_schema_disabled", "server", "info")
    assert "performance_schema=ON" in f.recommendation and result.state is None
    consumer = [{**off[0], "ps_enabled": 1, "digest_consumer": "NO"}]
    [f] = query_stats.transform(consumer, ctx_for(query_stats.SPEC, recorded("mysql_8_0"))).findings
    assert "statements_digest" in f.title


def _hourly(data, means_ms, calls=100):
    """Run the transform once an hour, each hour adding `calls` executions at the given mean."""
    row = dict(data["digests_1"][2], calls=0, timer_ps=0, rows_examined=0, rows_sent=0, no_index_used=0)
    state, result = None, None
    for hour, mean in enumerate(means_ms):
        row = dict(row, calls=row["calls"] + calls, timer_ps=row["timer_ps"] + int(calls * mean * PS_PER_MS),
                   server_now=(datetime(2024, 3, 1) + timedelta(hours=hour)).isoformat(sep=" "))
        result = query_stats.transform([row], ctx_for(query_stats.SPEC, data, now=T0 + timedelta(hours=hour), previous=state))
        state = result.state
    return result


def test_query_regression_against_its_own_baseline():
    data = recorded("mysql_8_0")
    steady = _hourly(data, [10.0] * 50)
    assert steady.findings == []
    regressed = _hourly(data, [10.0] * 49 + [40.0])
    [f] = regressed.findings
    assert f.check == "query_regression" and f.details["baseline_mean_ms"] < 11 < 25 < f.details["recent_mean_ms"]


def test_no_regression_before_a_day_of_baseline():
    assert _hourly(recorded("mysql_8_0"), [10.0] * 5 + [40.0]).findings == []
