"""query_stats: deltas and findings on recorded rows, then against real PostgreSQL 15 and 18."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from collectors.engines import connect
from collectors.engines.base import Target
from collectors.postgres import query_stats as qs
from collectors.runner import run_collector
from tests.collectors.postgres.conftest import PG15_BIN, start_cluster
from tests.collectors.spec_context import spec_context

FIXTURES = Path(__file__).parent.parent / "fixtures" / "postgres"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def recorded(tag: str) -> dict:
    return json.loads((FIXTURES / f"query_stats_{tag}.json").read_text())


def row(qid="1", user="app", calls=0, total_ms=0.0, rows=0, hit=0, read=0, temp=0, since=None, reset=None, **kw):
    return {"queryid": qid, "username": user, "datname": "db", "calls": calls, "total_ms": total_ms,
            "rows": rows, "shared_blks_hit": hit, "shared_blks_read": read, "temp_blks_written": temp,
            "io_ms": 0.0, "stats_since": since, "stats_reset": reset, **kw}


def run(rows, previous=None, at=T0, **thresholds):
    return qs.transform(rows, spec_context(qs.SPEC, "i1", "postgres", thresholds=thresholds, now=at, previous=previous))


def runs(*snapshots, step=timedelta(minutes=5), **thresholds):
    """Feed snapshots through the transform as consecutive runs; returns every Result."""
    results, state = [], None
    for i, rows in enumerate(snapshots):
        results.append(run(rows, state, T0 + i * step, **thresholds))
        state = results[-1].state
    return results


@pytest.mark.parametrize("tag", ["pg15", "pg18"])
def test_recorded_snapshots_give_exact_deltas(tag):
    rec = recorded(tag)
    first, second = runs(rec["before"], rec["after"])
    assert first.query_stats == [] and first.findings == []
    by_text = {r["queryid"]: r["query"] for r in rec["texts"]}
    deltas = {by_text[s.query_id]: s for s in second.query_stats}
    point, scan = deltas["select * from t where id = $1"], deltas["select count(*) from t where v = $1"]
    assert (point.calls, point.rows, scan.calls, scan.rows) == (5, 4, 3, 3)  # ids 0..4, id 0 does not exist
    assert point.interval_s == 300.0 and point.total_ms > 0 and point.database == "dbf_pgq_rec"
    # Texts were not fetched in the recorded rows, so they stay pending for the next run.
    assert point.text is None and all(qs.counter_row(c)[8] for c in second.state["counters"].values())


@pytest.mark.parametrize("case, before, after, expect_calls", [
    ("counters grow", row(calls=10, total_ms=50), row(calls=15, total_ms=80), 5),
    ("calls went down: reset", row(calls=10, total_ms=50), row(calls=3, total_ms=9), None),
    ("time went down: reset", row(calls=10, total_ms=50), row(calls=10, total_ms=5), None),
    ("float wobble is no reset", row(calls=10, total_ms=50.0), row(calls=12, total_ms=49.9999), 2),
    ("nothing ran: no row", row(calls=10, total_ms=50), row(calls=10, total_ms=50), None),
    ("entry re-created (17+)", row(calls=10, since="2026-11-26T11:00:00+00:00"),
     row(calls=12, since="2026-11-26T12:01:00+00:00"), None),
    ("view reset (14+)", row(calls=10, reset="2026-11-01T00:00:00+00:00"),
     row(calls=12, reset="2026-11-26T12:03:00+00:00"), None),
])
def test_deltas_are_reset_safe(case, before, after, expect_calls):
    _, second = runs([before], [after])
    got = [s.calls for s in second.query_stats]
    assert got == ([] if expect_calls is None else [expect_calls]), case
    assert all(s.calls > 0 and s.total_ms >= 0 and s.rows >= 0 for s in second.query_stats)


def test_vanished_query_starts_a_new_baseline_when_it_reappears():
    a, b = row("1", calls=100), row("2", calls=7)
    results = runs([a, b], [a], [row("1", calls=100), row("2", calls=500)])
    assert results[2].query_stats == []  # 500 calls are not this interval's: new baseline
    fourth = run([row("2", calls=510, total_ms=1.0)], results[2].state, T0 + timedelta(minutes=15))
    assert [s.calls for s in fourth.query_stats] == [10]


def test_first_run_and_unusable_previous_are_baselines():
    for previous in (None, {"v": 99}, "garbage", {"v": 1, "at": (T0 + timedelta(hours=1)).timestamp()}):
        result = run([row(calls=10, total_ms=5000)], previous)
        assert result.query_stats == [] and result.findings == []
        assert qs.counter_row(result.state["counters"]["1|app"])[0] == 10


def test_text_is_sent_once_and_capped():
    results = runs([row(calls=1)], [row(calls=3, query="select " + "x" * 20_000)],
                   [row(calls=5, query="select 1")], text_max_chars=100)
    assert results[0].query_stats == []
    assert results[1].query_stats[0].text == ("select " + "x" * 20_000)[:100]
    assert results[2].query_stats[0].text is None


def test_text_stays_pending_until_it_arrives_and_users_are_separate_keys():
    results = runs([row(user="a", calls=1), row(user="b", calls=1)],
                   [row(user="a", calls=2), row(user="b", calls=2)],
                   [row(user="a", calls=3, query="select 2"), row(user="b", calls=3, query="select 2")])
    assert [s.text for s in results[1].query_stats] == [None, None]
    assert sorted((s.user, s.text) for s in results[2].query_stats) == [("a", "select 2"), ("b", "select 2")]


def test_a_counter_row_is_one_string_and_reads_back_as_the_list_it_was():
    state = run([row(calls=10, total_ms=5.5)]).state
    text = state["counters"]["1|app"]
    assert isinstance(text, str) and json.loads(json.dumps(state)) == state
    assert qs.counter_row(text)[:2] == [10.0, 5.5] and qs.counter_row(text)[8] is True
    # A state written before (lists) still gives deltas.
    old = {**state, "counters": {"1|app": qs.counter_row(text)}}
    assert run([row(calls=15, total_ms=8.0)], old, T0 + timedelta(minutes=5)).query_stats[0].calls == 5


def test_keys_needing_text_asks_only_for_pending_keys_with_new_calls():
    state = runs([row("1", calls=1), row("2", calls=1), row("3", calls=1)])[0].state
    state["counters"]["3|app"] = state["counters"]["3|app"][:-1] + "0"  # its text is stored
    assert qs.keys_needing_text([row("1", calls=2), row("2", calls=1), row("3", calls=9)], state) == ["1"]
    assert qs.keys_needing_text([row("1", calls=2)], None) == []


def slow_snapshots(calls_per_run: int, ms_per_call: float, n: int = 4):
    return [[row("42", calls=i * calls_per_run, total_ms=i * calls_per_run * ms_per_call, query="select slow()")]
            for i in range(n)]


@pytest.mark.parametrize("calls_per_run, ms_per_call, thresholds, expected", [
    (40, 150.0, {}, ["slow_query"]),                 # 120 calls in the hour, 150 ms each
    (30, 150.0, {}, []),                             # 90 calls: too few to matter
    (40, 90.0, {}, []),                              # 90 ms: under the 100 ms threshold
    (40, 90.0, {"slow_query_mean_ms": 50}, ["slow_query"]),
    (3, 20.0, {"slow_query_mean_ms": 10, "slow_query_min_calls": 5}, ["slow_query"]),
])
def test_slow_query(calls_per_run, ms_per_call, thresholds, expected):
    last = runs(*slow_snapshots(calls_per_run, ms_per_call), **thresholds)[-1]
    assert [f.check for f in last.findings] == expected
    if expected:
        f = last.findings[0]
        assert f.object == "42" and f.severity == "warning" and "select slow()" in f.title
        assert f.details["calls"] == 3 * calls_per_run and f.details["mean_ms"] == pytest.approx(ms_per_call)


def test_slow_query_window_is_the_last_hour():
    snapshots = slow_snapshots(40, 150.0, n=4) + [slow_snapshots(40, 150.0, n=4)[-1]] * 13
    results = runs(*snapshots)
    assert [f.check for f in results[3].findings] == ["slow_query"]
    assert results[-1].findings == []  # an hour without calls: resolved
    assert results[-1].state["queries"]["42"]["r"] == [] and results[-1].state["queries"]["42"]["d"]


def regression_state(base_calls: int, base_mean: float) -> dict:
    day = int((T0.timestamp() - 86400) // 86400)
    return {"v": 1, "at": T0.timestamp() - 300, "stats_reset": None,
            "counters": {"7|app": [1000, 1000.0, 0, 0, 0, 0, 0.0, None, False]},
            "queries": {"7": {"r": [], "d": [[day, base_calls, base_calls * base_mean]], "t": "select r()"}}}


@pytest.mark.parametrize("base_calls, base_mean, new_mean, expected", [
    (5000, 10.0, 30.0, ["query_regression"]),
    (5000, 10.0, 15.0, []),              # 1.5x: within the usual wobble
    (50, 10.0, 30.0, []),                # too little history to call it a regression
    (5000, 1.0, 3.0, []),                # 3 ms: a regression nobody feels
])
def test_query_regression(base_calls, base_mean, new_mean, expected):
    now_row = row("7", calls=1200, total_ms=1000.0 + 200 * new_mean)
    result = run([now_row], regression_state(base_calls, base_mean))
    assert [f.check for f in result.findings] == expected
    if expected:
        d = result.findings[0].details
        assert (d["baseline_mean_ms"], d["mean_ms_last_hour"], d["calls_last_hour"]) == (base_mean, new_mean, 200)


def test_state_keeps_only_the_costliest_queries():
    snapshots = [[row(str(q), calls=i * 10, total_ms=i * 10.0 * q) for q in range(1, 6)] for i in range(3)]
    last = runs(*snapshots, tracked_queries=2)[-1]
    assert sorted(last.state["queries"]) == ["4", "5"]
    assert len(last.state["counters"]) == 5  # counters are bounded by pg_stat_statements.max itself


def test_empty_view_keeps_working():
    first, second = runs([], [row(calls=1)])
    assert first.state["counters"] == {} and second.query_stats == []


# --- evictions: pg_stat_statements.max too small (pg_stat_statements_info.dealloc, 14+) -------

RESET = "2026-11-01T00:00:00+00:00"


def evicting(*rows, dealloc, pgss_max=100, reset=RESET):
    """One snapshot of a view that has deallocated least-used entries `dealloc` times since `reset`."""
    return [{**r, "dealloc": dealloc, "pgss_max": pgss_max, "stats_reset": reset} for r in rows]


def test_evictions_in_the_window_are_said_and_regrown_entries_are_no_growth():
    slow_before, slow_after = row("42", calls=1000, total_ms=150_000.0, query="select slow()"), \
        row("42", calls=1120, total_ms=150_000.0 + 120 * 150)
    before = evicting(slow_before, row("7", calls=900, total_ms=900.0), dealloc=3)
    # "7" was evicted and regrew from 0; "8" is new since the last run (or evicted earlier and back).
    after = evicting(slow_after, row("7", calls=4, total_ms=4.0), row("8", calls=6, total_ms=12.0), dealloc=5)
    first, second = runs(before, after)
    assert ("pg_stat_statements_dealloc_total", 3.0) in {(s.metric, s.value) for s in first.samples}
    deltas = {s.query_id: s for s in second.query_stats}
    assert "7" not in deltas  # went backwards: a new baseline, never a negative delta
    assert (deltas["8"].calls, deltas["8"].total_ms) == (6, 12.0)  # all of its counters are this interval's
    assert deltas["42"].calls == 120 and all(s.calls > 0 and s.total_ms >= 0 for s in second.query_stats)
    [slow] = second.findings
    assert slow.check == "slow_query" and slow.details["evictions_in_window"] == 2
    assert slow.details["pg_stat_statements_max"] == 100
    assert "pg_stat_statements.max" in slow.recommendation and "100" in slow.recommendation
    assert ("pg_stat_statements_dealloc_total", 5.0) in {(s.metric, s.value) for s in second.samples}


def test_evictions_count_over_the_findings_window_and_then_drop_out():
    calls = [row("42", calls=i * 40, total_ms=i * 40 * 150.0, query="select slow()") for i in range(20)]
    dealloc = [0, 0, 2, 2, 3] + [3] * 15  # two passes, then one, early in the hour; none after
    results = runs(*[evicting(r, dealloc=d) for r, d in zip(calls, dealloc)])
    def said(i):
        return [f.details.get("evictions_in_window") for f in results[i].findings]

    assert said(3) == [2] and said(4) == [3]
    assert said(13) == [3]  # 55 minutes after the first pass
    assert said(15) == [1]  # the first two passes are over an hour old
    assert said(17) == [None] and "pg_stat_statements.max" not in results[17].findings[0].recommendation


@pytest.mark.parametrize("case, prev_dealloc, now_dealloc, now_reset, expected", [
    ("dealloc grew", 10, 12, RESET, 2),
    ("no evictions", 10, 10, RESET, None),
    ("view reset since: every pass counted since then", 10, 1, "2026-11-26T11:58:00+00:00", 1),
    ("before 14 there is no dealloc", None, None, RESET, None),
])
def test_regression_says_when_the_window_saw_evictions(case, prev_dealloc, now_dealloc, now_reset, expected):
    state = {**regression_state(5000, 10.0), "stats_reset": RESET, "dealloc": prev_dealloc}
    now_row = evicting(row("7", calls=1200, total_ms=1000.0 + 200 * 30.0), dealloc=now_dealloc, reset=now_reset)
    result = run(now_row, state)
    if now_reset != RESET:  # a reset view starts new baselines: no regression to see, only its evictions
        assert result.findings == [] and result.state["ev"] == [[T0.timestamp(), expected]]
        return
    [regression] = result.findings
    assert regression.details.get("evictions_in_window") == expected, case
    assert ("pg_stat_statements.max" in regression.recommendation) == (expected is not None)


def test_texts_are_fetched_for_entries_that_appeared_while_the_view_evicted():
    state = runs(evicting(row("1", calls=1), dealloc=0))[0].state
    assert qs.keys_needing_text(evicting(row("1", calls=2), row("2", calls=1), dealloc=0), state) == ["1"]
    assert qs.keys_needing_text(evicting(row("1", calls=2), row("2", calls=1), dealloc=4), state) == ["1", "2"]


@pytest.mark.parametrize("server, ext, level", [
    (120005, "1.7", 120000), (130004, "1.8", 130000), (140002, "1.8", 130000),
    (150020, "1.10", 140000), (170000, "1.11", 170000), (180006, "1.12", 170000), (180006, "bad", 120000),
])
def test_sql_follows_the_extension_version(server, ext, level):
    assert qs.sql_level(server, ext) == level
    sql = qs.SPEC.sql_for(qs.sql_level(server, ext))
    assert ("total_exec_time" in sql) == (level >= 130000)
    assert ("shared_blk_read_time" in sql) == (level >= 170000)
    assert ("from {pgss}.pg_stat_statements_info" in sql) == (level >= 140000)
    assert " as dealloc" in sql and "pg_stat_statements.max" in sql
    assert "pg_stat_statements_reset" not in sql


# --- against real servers -------------------------------------------------------------------

async def _workload_db(host: str, port: int, name: str, extension: bool = True) -> asyncpg.Connection:
    admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    await admin.execute(f"drop database if exists {name} with (force)")
    await admin.execute(f"create database {name}")
    await admin.close()
    app = await asyncpg.connect(host=host, port=port, user="postgres", database=name)
    if extension:
        await app.execute("create extension pg_stat_statements")
    return app


async def _drop(host: str, port: int, name: str) -> None:
    admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    await admin.execute(f"drop database if exists {name} with (force)")
    await admin.close()


async def _three_runs(host: str, port: int, name: str, app: asyncpg.Connection):
    conn = await connect(Target("t", "postgres", host, port, name, "postgres"))
    try:
        limits = {"slow_query_mean_ms": 10, "slow_query_min_calls": 5}
        await app.fetch("select pg_sleep($1)", 0.02)
        first = await run_collector(qs.SPEC, conn, spec_context(qs.SPEC, "t", "postgres", thresholds=limits))
        for _ in range(5):
            await app.fetch("select pg_sleep($1)", 0.02)
        second = await run_collector(qs.SPEC, conn, spec_context(qs.SPEC, "t", "postgres", thresholds=limits, previous=first.state))
        await app.fetch("select pg_sleep($1)", 0.02)
        third = await run_collector(qs.SPEC, conn, spec_context(qs.SPEC, "t", "postgres", thresholds=limits, previous=second.state))
        return conn.server_version, first, second, third
    finally:
        await conn.close()


def _sleep_stat(result):
    return next(s for s in result.query_stats if s.query_id in result.state["queries"]
                and "pg_sleep" in (result.state["queries"][s.query_id]["t"] or ""))


@pytest.mark.parametrize("cluster_fixture", ["pg15_cluster", "pg18_cluster"])
async def test_real_server_deltas_text_and_slow_query(cluster_fixture, request):
    cluster = request.getfixturevalue(cluster_fixture)
    app = await _workload_db(cluster.host, cluster.port, "dbf_pgq_qs")
    try:
        reset_before = await app.fetchval("select stats_reset from pg_stat_statements_info")
        version, first, second, third = await _three_runs(cluster.host, cluster.port, "dbf_pgq_qs", app)
        assert version >= (180000 if cluster_fixture == "pg18_cluster" else 150000)
        assert first.query_stats == [] and first.state["counters"]
        assert json.loads(json.dumps(third.state)) == third.state  # the store keeps it as JSON
        sleep = _sleep_stat(second)
        assert sleep.calls == 5 and sleep.total_ms >= 100 and sleep.text.startswith("select pg_sleep")
        assert sleep.user == "postgres" and sleep.database == "dbf_pgq_qs"
        slow = [f for f in second.findings if f.check == "slow_query"]
        assert [f.object for f in slow] == [sleep.query_id]
        again = next(s for s in third.query_stats if s.query_id == sleep.query_id)
        assert again.calls == 1 and again.text is None
        if cluster_fixture == "pg18_cluster":  # 17+ carries per-entry stats_since
            assert qs.counter_row(second.state["counters"][f"{sleep.query_id}|postgres"])[7] is not None
        # We never reset anybody's statistics.
        assert await app.fetchval("select stats_reset from pg_stat_statements_info") == reset_before
    finally:
        await app.close()
        await _drop(cluster.host, cluster.port, "dbf_pgq_qs")


@pytest.mark.parametrize("extension", [True, False])
async def test_unreadable_view_yields_nothing(extension):
    """The shared server does not preload pg_stat_statements: the view errors or is absent."""
    app = await _workload_db("127.0.0.1", 5432, "dbf_pgq_nopgss", extension=extension)
    try:
        preload = await app.fetchval("show shared_preload_libraries")
        if "pg_stat_statements" in preload:
            pytest.skip("the shared server preloads pg_stat_statements")
        conn = await connect(Target("t", "postgres", "127.0.0.1", 5432, "dbf_pgq_nopgss", "postgres"))
        result = await run_collector(qs.SPEC, conn, spec_context(qs.SPEC, "t", "postgres"))
        await conn.close()
        assert (result.findings, result.query_stats, result.state) == ([], [], None)
    finally:
        await app.close()
        await _drop("127.0.0.1", 5432, "dbf_pgq_nopgss")


@pytest.fixture(scope="module")
def pg15_small_pgss():
    """PostgreSQL 15 whose pg_stat_statements keeps only 100 entries (its minimum), so it evicts."""
    if not (PG15_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the PostgreSQL 15 binaries")
    cluster = start_cluster(PG15_BIN, {"shared_preload_libraries": "'pg_stat_statements'",
                                       "pg_stat_statements.max": "100"})
    yield cluster
    cluster.stop()


async def test_real_server_evictions_are_said_in_the_findings(pg15_small_pgss):
    cluster = pg15_small_pgss
    app = await _workload_db(cluster.host, cluster.port, "dbf_pgq_evict")
    conn = await connect(Target("t", "postgres", cluster.host, cluster.port, "dbf_pgq_evict", "postgres"))
    limits = {"slow_query_mean_ms": 10, "slow_query_min_calls": 5}
    try:
        for _ in range(20):  # used often enough that eviction, which takes the least used, leaves it
            await app.fetch("select pg_sleep($1)", 0.001)
        first = await run_collector(qs.SPEC, conn, spec_context(qs.SPEC, "t", "postgres", thresholds=limits))
        for n in range(1, 251):  # 250 statements the normalizer cannot fold into one (constants it can)
            await app.execute("select " + " + ".join(["1"] * n))
        for _ in range(5):
            await app.fetch("select pg_sleep($1)", 0.02)
        second = await run_collector(qs.SPEC, conn, spec_context(qs.SPEC, "t", "postgres", thresholds=limits, previous=first.state))
        dealloc = await app.fetchval("select dealloc from pg_stat_statements_info")
    finally:
        await conn.close()
        await app.close()
        await _drop(cluster.host, cluster.port, "dbf_pgq_evict")
    assert dealloc > first.state["dealloc"]
    [slow] = [f for f in second.findings if f.check == "slow_query"]
    assert slow.details["evictions_in_window"] >= 1 and slow.details["pg_stat_statements_max"] == 100
    assert "pg_stat_statements.max" in slow.recommendation
    samples = {s.metric: s.value for s in second.samples}
    assert samples["pg_stat_statements_dealloc_total"] >= first.state["dealloc"] + slow.details["evictions_in_window"]
    # Every delta is real: each one-off statement ran once, nothing is negative or made up.
    assert all(0 < s.calls <= 20 and s.total_ms >= 0 and s.rows >= 0 for s in second.query_stats)
