"""Awkward recorded-row cases: shrinking and vanishing counters, NULL DMV columns, a regression
appearing over an hour of snapshots, a restored database, SQL Server 2012 AG rows without
secondary_lag_seconds, RANGE LEFT functions and shared partition functions, Query Store choice."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from collectors.common.query_baseline import counter_deltas
from collectors.sqlserver import index_advice, partitions, query_stats, replication
from tests.collectors.spec_context import spec_context

from .conftest import context

NOW = datetime(2025, 6, 15, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize("previous, current, expected", [
    ({"q": {"calls": 10, "ms": 100}}, {"q": {"calls": 15, "ms": 160}}, {"q": {"calls": 5, "ms": 60}}),
    ({"q": {"calls": 10, "ms": 100}}, {"q": {"calls": 4, "ms": 40}}, {}),      # plan evicted and recompiled
    ({"q": {"calls": 10, "ms": 100}}, {"q": {"calls": 12, "ms": 90}}, {}),     # one counter shrank
    ({}, {"q": {"calls": 4, "ms": 40}}, {}),                                   # first sight: a baseline only
    (None, {"q": {"calls": 4, "ms": 40}}, {}),
    ({"q": {"calls": 10, "ms": 100}}, {}, {}),                                 # vanished: nothing to report
])
def test_counter_deltas_are_reset_safe(previous, current, expected):
    assert counter_deltas(current, previous) == expected


def _row(calls: int, elapsed_us: int) -> dict:
    return {"query_hash": "0xAA", "source": "plan_cache", "execution_count": calls, "total_elapsed_time": elapsed_us,
            "total_worker_time": None, "total_logical_reads": None, "total_physical_reads": None, "total_rows": None,
            "plan_count": 1, "first_cached": None, "database_name": None, "query_text": "SELECT 1"}


def _drive(series: list[tuple[int, float]], start: datetime, state=None):
    """Feed cumulative (calls, mean_ms-of-this-interval) snapshots 5 minutes apart."""
    calls, elapsed, results = 0, 0, []
    for i, (n, mean_ms) in enumerate(series):
        calls, elapsed = calls + n, elapsed + int(n * mean_ms * 1000)
        ctx = spec_context(query_stats.SPEC, "i", "sqlserver", now=start + timedelta(minutes=5 * i), previous=state)
        result = query_stats.transform([_row(calls, elapsed)], ctx)
        state, results = result.state, results + [result]
    return results


def test_regression_appears_within_the_hour_and_not_before_a_baseline_exists():
    start = NOW - timedelta(days=2)
    calm = [(300, 10.0)] * (12 * 48)          # two days at 10 ms per call
    slow = [(300, 60.0)] * 12                 # then an hour at 60 ms
    results = _drive(calm + slow, start)
    checks = [{f.check for f in r.findings} for r in results]
    assert all("query_regression" not in c for c in checks[: len(calm)])
    assert "query_regression" not in checks[len(calm)]           # one slow interval is not yet an hour
    assert "query_regression" in checks[-1]
    assert all(s.total_ms >= 0 and s.calls > 0 for r in results for s in r.query_stats)


def test_a_young_baseline_never_reports_a_regression():
    results = _drive([(300, 10.0)] * 12 + [(300, 80.0)] * 24, NOW)
    assert not any(f.check == "query_regression" for r in results for f in r.findings)


def test_shrinking_counters_start_a_new_baseline(planted):
    result = query_stats.transform(planted["query_stats"]["rows"], context(planted, "query_stats"))
    ids = {s.query_id for s in result.query_stats}
    assert "0x55AA55AA55AA55AA" not in ids                      # 5000 -> 120 executions: evicted plan
    assert result.state["counters"]["plan_cache:0x55AA55AA55AA55AA"]["execution_count"] == 120


def test_restored_database_is_not_judged_on_a_short_usage_window(planted):
    rows = copy.deepcopy(planted["index_advice"]["rows"])
    rows[0]["database_age_s"] = 2 * 86_400     # restored two days ago; tables are two years old
    result = index_advice.transform(rows, context(planted, "index_advice"))
    assert "unused_index" not in {f.check for f in result.findings}
    assert "duplicate_index" in {f.check for f in result.findings}


def test_heap_is_reported_above_the_row_threshold(planted):
    rows = planted["index_advice"]["rows"] + [{
        "kind": "index", "schema_name": "dbo", "table_name": "staging_load", "index_name": None, "index_id": 0,
        "type_desc": "HEAP", "is_unique": False, "is_primary_key": False, "is_unique_constraint": False,
        "has_filter": False, "filter_definition": None, "is_disabled": False, "table_age_s": 999999,
        "user_seeks": None, "user_scans": 40, "user_lookups": None, "user_updates": 100, "last_user_seek": None,
        "last_user_scan": None, "size_bytes": 1 << 30, "row_count": 2_000_000}]
    result = index_advice.transform(rows, context(planted, "index_advice"))
    assert ("heap_table", "dbo.staging_load") in {(f.check, f.object) for f in result.findings}


@pytest.mark.parametrize("secondary_lag, commit_time, redo_queue, redo_rate, expected", [
    (12, None, None, None, 12.0),                           # 2016+: the server's own figure
    (None, "2025-06-15T11:58:20", None, None, 99.0),        # 2012: primary 11:59:59 minus ours
    (None, None, 6200, 310, 20.0),                          # only queues known: redo estimate
    (None, None, 0, 0, None),                               # nothing known: no sample
])
def test_lag_seconds_by_version(secondary_lag, commit_time, redo_queue, redo_rate, expected):
    primary = {("ag", "db"): {"last_commit_time": "2025-06-15T11:59:59"}}
    row = {"ag_name": "ag", "database_name": "db", "secondary_lag_seconds": secondary_lag,
           "last_commit_time": commit_time, "redo_queue_size": redo_queue, "redo_rate": redo_rate}
    assert replication.lag_seconds(row, primary if commit_time else {}) == expected


def _table(range_right: bool, bounds: list[str], tables_on_function: int = 1) -> partitions.PartitionedTable:
    return partitions.PartitionedTable("dbo", "t", "pf", "ps", range_right, "date",
                                       [datetime.fromisoformat(b) for b in bounds],
                                       tables_on_function=tables_on_function)


@pytest.mark.parametrize("range_right, bounds, expired", [
    (True, ["2024-01-01", "2024-06-15T12:00:00", "2024-07-01"], ["2024-01-01", "2024-06-15"]),
    (False, ["2024-01-01", "2024-06-15T12:00:00", "2024-07-01"], ["2024-01-01"]),   # LEFT: a bound equal to the cutoff holds rows at the cutoff
])
def test_expired_bounds_follow_range_direction(range_right, bounds, expired):
    t = _table(range_right, bounds)
    got = partitions.expired_bounds(t, NOW, 365)
    assert [b.strftime("%Y-%m-%d") for b in got] == expired


def test_shared_partition_function_gets_no_merge_plan():
    t = _table(True, ["2024-01-01", "2024-02-01"], tables_on_function=2)
    assert partitions.plan_retention(t, NOW, 30) == []


def test_premake_plan_for_daily_date_function():
    t = _table(True, ["2025-06-14", "2025-06-15", "2025-06-16"])
    plan = partitions.plan_premake(t, NOW, 3)
    assert plan == ["ALTER PARTITION SCHEME [ps] NEXT USED [PRIMARY]",
                    "ALTER PARTITION FUNCTION [pf]() SPLIT RANGE ('20250617')",
                    "ALTER PARTITION SCHEME [ps] NEXT USED [PRIMARY]",
                    "ALTER PARTITION FUNCTION [pf]() SPLIT RANGE ('20250618')"]


class RecordedServer:
    """Stands in for a SQL Server (none can run here): answers from recorded rows by statement."""

    engine, is_standby = "sqlserver", False

    def __init__(self, version: int, answers: dict[str, list[dict]]):
        self.server_version, self.answers, self.asked = version, answers, []

    async def fetch(self, sql, *args):
        self.asked.append((sql, args))
        return next(rows for marker, rows in self.answers.items() if marker in sql)

    async def close(self):
        pass


@pytest.mark.parametrize("version, state, source", [
    (16_004_135, "READ_WRITE", "query_store"),
    (16_004_135, "OFF", "plan_cache"),
    (11_007_001, None, "plan_cache"),                     # 2012: no Query Store, not even asked
])
async def test_run_hook_prefers_query_store_when_on(planted, version, state, source):
    row = dict(planted["query_stats"]["rows"][0])
    server = RecordedServer(version, {
        "database_query_store_options": [{"actual_state_desc": state, "readonly_reason": 0}],
        "query_store_runtime_stats": [{**row, "source": "query_store"}],
        "dm_exec_query_stats": [{**row, "source": "plan_cache"}],
    })
    ctx = spec_context(query_stats.SPEC, "i", "sqlserver", now=NOW)
    result = await query_stats.run(server, ctx)
    assert next(iter(result.state["counters"])).startswith(source + ":")
    if source == "query_store":
        assert server.asked[-1][1][0] == NOW.replace(tzinfo=None)   # the anchor is passed as a parameter
        assert result.state["anchor"] == NOW.isoformat()
    if version < 13_000_000:
        assert len(server.asked) == 1
