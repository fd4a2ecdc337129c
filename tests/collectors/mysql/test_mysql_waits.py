"""Wait sampling: transforms on recorded wait-summary rows; a real MariaDB with performance_schema ON
(a throwaway server, since the machine's :3306 runs with it OFF) and the :3306 one, which is skipped
cleanly."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone, UTC

import pytest

from collectors.engines.base import Target, connect
from collectors.mysql import waits
from collectors.runner import run_collector
from tests.collectors.spec_context import spec_context

from .servers import MARIADBD, start_mariadb, stop_mariadb

T0 = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


def rows(uptime, *events, ps_enabled=1):
    """(event_name, waits, picoseconds) -> rows as the LEFT JOIN returns them."""
    if not events:
        return [{"ps_enabled": ps_enabled, "uptime_s": str(uptime), "event_name": None, "waits": None, "timer_ps": None}]
    return [{"ps_enabled": ps_enabled, "uptime_s": str(uptime), "event_name": e, "waits": n, "timer_ps": ps}
            for e, n, ps in events]


def ctx(now=T0, previous=None):
    return spec_context(waits.SPEC, instance="db1", engine="mariadb", server_version=101119, now=now,
                        previous=previous)


def samples(result):
    return {(s.metric, s.object): s.value for s in result.samples}


FILE = "wait/io/file/innodb/innodb_data_file"
LOG = "wait/io/file/innodb/innodb_log_file"
MDL = "wait/lock/metadata/sql/mdl"


def test_first_run_is_the_baseline_only():
    first = waits.transform(rows(1000, (FILE, 10, 5 * 10**12)), ctx())
    assert first.samples == [] and first.state["counters"] == {FILE: [10, 5 * 10**12]}


def test_deltas_per_event_over_the_interval():
    first = waits.transform(rows(1000, (FILE, 10, 5 * 10**12), (LOG, 4, 10**9)), ctx())
    second = waits.transform(rows(1060, (FILE, 70, 35 * 10**12), (LOG, 4, 10**9), (MDL, 2, 6 * 10**12)),
                             ctx(T0 + timedelta(seconds=60), first.state))
    assert samples(second) == {
        ("wait_event_waits", "wait/io/file:innodb/innodb_data_file"): 60.0,
        ("wait_event_avg_sessions", "wait/io/file:innodb/innodb_data_file"): 0.5,   # 30 s waited in 60 s
        ("wait_event_waits", "wait/lock/metadata:sql/mdl"): 2.0,                    # new since: from zero
        ("wait_event_avg_sessions", "wait/lock/metadata:sql/mdl"): 0.1,
    }  # the log file did not wait again: no points for it


@pytest.mark.parametrize("case,uptime,counters", [
    ("restart", 30, [(FILE, 1, 10**9)]),               # uptime went down: counters started again
    ("truncated", 1060, [(FILE, 3, 10**9)]),          # TRUNCATE TABLE ... summary: counters fell
])
def test_restart_or_truncate_starts_a_new_baseline(case, uptime, counters):
    first = waits.transform(rows(1000, (FILE, 10, 5 * 10**12)), ctx())
    again = waits.transform(rows(uptime, *counters), ctx(T0 + timedelta(seconds=60), first.state))
    assert again.samples == [] and again.state["counters"] == {FILE: list(counters[0][1:])}


def test_the_longest_waits_get_their_own_points_the_rest_one_per_class():
    many = [(f"wait/synch/mutex/innodb/m{i:03d}", 1, (i + 1) * 10**9) for i in range(waits.TOP_EVENTS + 5)]
    first = waits.transform(rows(1000, *[(e, 0, 0) for e, _, _ in many]), ctx())
    second = waits.transform(rows(1060, *many), ctx(T0 + timedelta(seconds=60), first.state))
    points = samples(second)
    assert len(points) == 2 * (waits.TOP_EVENTS + 1)
    assert points[("wait_event_waits", "wait/synch/mutex:other")] == 5.0  # the five shortest
    assert ("wait_event_waits", "wait/synch/mutex:innodb/m000") not in points


def test_performance_schema_off_stores_and_says_nothing():
    """query_stats already raises performance_schema_disabled once for the server."""
    result = waits.transform(rows(1000, ps_enabled=0), ctx())
    assert result.findings == [] and result.samples == [] and result.state is None
    assert waits.transform([], ctx()).state is None


def test_wait_class():
    assert waits.wait_class("wait/lock/table/sql/handler") == ("wait/lock/table", "sql/handler")
    assert waits.wait_class("wait/io/socket/sql/client_connection") == ("wait/io/socket", "sql/client_connection")


async def test_machine_mariadb_with_performance_schema_off_is_skipped_cleanly():
    conn = await connect(Target("my", "mariadb", "127.0.0.1", 3306, "", "root"))
    try:
        enabled = (await conn.fetch("SELECT @@performance_schema AS on_"))[0]["on_"]
        result = await run_collector(waits.SPEC, conn, ctx(datetime.now(UTC)))
    finally:
        await conn.close()
    if enabled:
        pytest.skip("the machine's MariaDB has performance_schema ON now; the next test covers it")
    assert result.samples == [] and result.findings == [] and result.state is None


@pytest.fixture(scope="module")
def ps_mariadb():
    """A throwaway MariaDB started with performance_schema=ON (tests/collectors/mysql/servers.py)."""
    if not os.path.exists(MARIADBD):
        pytest.skip("mariadbd is not installed")
    server = start_mariadb("waits", 1)
    yield server
    stop_mariadb(server)


async def test_real_waits_between_two_runs(ps_mariadb):
    db = f"dbf_live16_{uuid.uuid4().hex[:8]}"
    conn = await connect(Target("my", "mariadb", "127.0.0.1", ps_mariadb.port, "", "root"))
    try:
        t0 = datetime.now(UTC)
        first = await run_collector(waits.SPEC, conn, ctx(t0))
        assert first.state is not None and first.state["counters"], "performance_schema is ON there"
        # Work that waits on InnoDB's files and table handlers: a table written, flushed and read back.
        ps_mariadb.execute(f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id int primary key, v text) engine=innodb",
                           *[f"INSERT INTO {db}.t VALUES ({i}, REPEAT('x', 4000))" for i in range(200)],
                           f"FLUSH TABLES {db}.t", f"SELECT COUNT(*) FROM {db}.t")
        second = await run_collector(waits.SPEC, conn, ctx(t0 + timedelta(seconds=60), first.state))
    finally:
        await conn.close()
        ps_mariadb.execute(f"DROP DATABASE IF EXISTS {db}")
    points = samples(second)
    classes = {key.split(":")[0] for _, key in points}
    assert points and classes <= {"wait/io/file", "wait/io/table", "wait/lock/table", "wait/io/socket",
                                  "wait/synch/mutex", "wait/synch/rwlock", "wait/synch/cond", "wait/synch/sxlock",
                                  "wait/lock/metadata"}, classes
    assert any(k.startswith("wait/io/") and v > 0 for (m, k), v in points.items() if m == "wait_event_waits")
    assert all(v >= 0 for v in points.values())
