"""Collector state outlives the process: terminal sweeps, restarted workers and overlapping sweeps
all continue one baseline stored in the store (real PostgreSQL 15 with pg_stat_statements, real MariaDB)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.settings import Settings
from app.sweep import Sweeper
from tests.collectors.mysql.servers import MARIADBD, start_mariadb, stop_mariadb
from tests.collectors.postgres.conftest import pg15_cluster  # noqa: F401 - the fixture, with pg_stat_statements

pytestmark = pytest.mark.slow
DBFLEET = str(Path(sys.executable).with_name("dbfleet"))
PG_SLOW = {"query_stats": {"thresholds": {"slow_query_mean_ms": 20, "slow_query_min_calls": 5}}}
MY_SLOW = {"query_stats": {"thresholds": {"slow_mean_ms": 20, "slow_min_calls": 5, "full_scan_min_calls": 5}}}


@pytest.fixture
async def pg_target(pg15_cluster) -> AsyncIterator[str]:
    """A fresh database with pg_stat_statements on the private cluster; its DSN."""
    admin = await asyncpg.connect(host=pg15_cluster.host, port=pg15_cluster.port, user="postgres")
    await admin.execute("drop database if exists dbf_state with (force)")
    await admin.execute("create database dbf_state")
    await admin.close()
    dsn = f"postgresql://postgres@{pg15_cluster.host}:{pg15_cluster.port}/dbf_state"
    conn = await asyncpg.connect(dsn)
    await conn.execute("create extension pg_stat_statements")
    await conn.close()
    yield dsn


async def register(store, item: InstanceIn) -> None:
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, [item], actor="test")


async def pg_workload(dsn: str, calls: int, sleep_s: float = 0.03) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(calls):
            await conn.execute(f"select pg_sleep({sleep_s})")
    finally:
        await conn.close()


def cli(store_url: str, *args: str, config: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "DBFLEET_DATABASE_URL": store_url}
    if config is not None:
        env["DBFLEET_CONFIG"] = str(config)
    return subprocess.run([DBFLEET, *args], env=env, capture_output=True, text=True, timeout=timeout)


async def live(store, check: str) -> list[dict]:
    async with store.raw() as conn:
        return [dict(r) for r in await conn.fetch(
            "select f.object, f.state from findings f where f.check = $1 and f.state <> 'resolved'", check)]


async def resolved_alerts(store, check: str) -> int:
    async with store.raw() as conn:
        return await conn.fetchval(
            "select count(*) from outbox o join findings f on f.id = o.finding_id "
            "where o.status = 'resolved' and f.check = $1", check)


async def test_two_terminal_sweeps_continue_one_baseline_on_postgres(clean_store, pg_target):
    await register(clean_store, InstanceIn(name="pg-state", engine="postgres", host="127.0.0.1",
                                           port=int(pg_target.rsplit(":", 1)[1].split("/")[0]), dbname="dbf_state",
                                           user="postgres", overrides=PG_SLOW))
    await pg_workload(pg_target, 1)  # a statement's first sighting is its baseline
    first = cli(clean_store.url, "sweep", "--collector", "query_stats", "--json")
    assert first.returncode == 0, first.stderr
    await pg_workload(pg_target, 12)
    second = cli(clean_store.url, "sweep", "--collector", "query_stats", "--json")
    assert second.returncode == 0, second.stderr
    slow = await live(clean_store, "slow_query")
    assert len(slow) == 1, slow
    async with clean_store.raw() as conn:
        calls = await conn.fetchval("select sum(s.calls) from query_stats s join query_texts t using (instance_id, query_id) "
                                    "where t.text like 'select pg_sleep%'")
        state_rows = await conn.fetchval("select count(*) from collector_state where collector = 'query_stats'")
    assert calls == 12 and state_rows == 1


async def test_a_run_without_a_baseline_resolves_nothing(clean_store, pg_target):
    port = int(pg_target.rsplit(":", 1)[1].split("/")[0])
    await register(clean_store, InstanceIn(name="pg-state", engine="postgres", host="127.0.0.1", port=port,
                                           dbname="dbf_state", user="postgres", overrides=PG_SLOW))
    settings = Settings(worker={"backoff_base_s": 0})
    sweeper = Sweeper(clean_store, settings)
    await pg_workload(pg_target, 1)
    try:
        await sweeper.sweep(["query_stats"])
        await pg_workload(pg_target, 12)
        await sweeper.sweep(["query_stats"])
    finally:
        await sweeper.close()
    assert len(await live(clean_store, "slow_query")) == 1
    async with clean_store.raw() as conn:  # the stored baseline is lost (a restore, an upgrade)
        await conn.execute("delete from collector_state")
    fresh = Sweeper(clean_store, settings)
    try:
        await fresh.sweep(["query_stats"])
    finally:
        await fresh.close()
    assert len(await live(clean_store, "slow_query")) == 1
    assert await resolved_alerts(clean_store, "slow_query") == 0


async def test_overlapping_sweepers_never_count_one_interval_twice(clean_store, pg_target):
    port = int(pg_target.rsplit(":", 1)[1].split("/")[0])
    await register(clean_store, InstanceIn(name="pg-state", engine="postgres", host="127.0.0.1", port=port,
                                           dbname="dbf_state", user="postgres"))
    settings = Settings(worker={"backoff_base_s": 0})
    a, b = Sweeper(clean_store, settings), Sweeper(clean_store, settings)
    await pg_workload(pg_target, 1, 0)
    try:
        await a.sweep(["query_stats"])
        await pg_workload(pg_target, 10, 0)
        await b.sweep(["query_stats"])          # continues a's baseline
        await pg_workload(pg_target, 5, 0)
        await a.sweep(["query_stats"])          # a's copy is stale: reloaded, not re-diffed
        await pg_workload(pg_target, 3, 0)
        await asyncio.gather(a.sweep(["query_stats"]), b.sweep(["query_stats"]))  # one runs, one is skipped
        await b.sweep(["query_stats"])
    finally:
        await a.close()
        await b.close()
    async with clean_store.raw() as conn:
        calls = await conn.fetchval("select sum(s.calls) from query_stats s join query_texts t using (instance_id, query_id) "
                                    "where t.text like 'select pg_sleep%'")
    assert calls == 18


@pytest.fixture(scope="module")
def mariadb() -> Iterator:
    if not os.path.exists(MARIADBD):
        pytest.skip("mariadbd is not installed")
    server = start_mariadb("state", 41)
    yield server
    stop_mariadb(server)


async def test_two_terminal_sweeps_continue_one_baseline_on_mariadb(clean_store, mariadb):
    mariadb.execute("DROP DATABASE IF EXISTS dbf_state", "CREATE DATABASE dbf_state",
                    "CREATE TABLE dbf_state.events (id int primary key, kind int)", "USE dbf_state",
                    "INSERT INTO dbf_state.events SELECT seq, seq % 100 FROM seq_1_to_20000")
    await register(clean_store, InstanceIn(name="my-state", engine="mariadb", host="127.0.0.1", port=mariadb.port,
                                           dbname="dbf_state", user="root", overrides=MY_SLOW))
    # The entry names schema dbf_state: only statements run in it are its own.
    mariadb.execute("USE dbf_state", "SELECT SLEEP(0.03)", "SELECT count(*) FROM dbf_state.events WHERE kind = 7")
    first = cli(clean_store.url, "sweep", "--collector", "query_stats", "--json")
    assert first.returncode == 0, first.stderr
    mariadb.execute("USE dbf_state", *["SELECT SLEEP(0.03)"] * 8, *["SELECT count(*) FROM dbf_state.events WHERE kind = 7"] * 8)
    second = cli(clean_store.url, "sweep", "--collector", "query_stats", "--json")
    assert second.returncode == 0, second.stderr
    assert len(await live(clean_store, "slow_query")) >= 1
    assert len(await live(clean_store, "full_scan_query")) == 1


async def test_a_worker_killed_and_restarted_sends_no_resolved_for_what_is_still_there(clean_store, pg_target,
                                                                                      tmp_path):
    port = int(pg_target.rsplit(":", 1)[1].split("/")[0])
    await register(clean_store, InstanceIn(name="pg-state", engine="postgres", host="127.0.0.1", port=port,
                                           dbname="dbf_state", user="postgres", overrides=PG_SLOW))
    config = tmp_path / "dbfleet.yaml"
    config.write_text("worker: {metrics_port: 0, backoff_base_s: 0}\n"
                      "collectors: {query_stats: {interval_s: 5}, health: {enabled: false},"
                      " index_advice: {enabled: false}, partitions: {enabled: false},"
                      " replication: {enabled: false}}\n")
    stop = asyncio.Event()

    async def steady_load() -> None:
        while not stop.is_set():
            await pg_workload(pg_target, 5)
            await asyncio.sleep(0.2)

    load = asyncio.create_task(steady_load())
    try:
        worker = start_worker(clean_store.url, config)
        await wait_for(lambda: live(clean_store, "slow_query"), timeout_s=40)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        runs_before = await query_stats_runs(clean_store)
        worker = start_worker(clean_store.url, config)
        try:
            await wait_for(lambda: _more_runs(clean_store, runs_before + 2), timeout_s=40)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=20)
    finally:
        stop.set()
        await load
    assert len(await live(clean_store, "slow_query")) == 1
    assert await resolved_alerts(clean_store, "slow_query") == 0


def start_worker(store_url: str, config: Path) -> subprocess.Popen:
    env = {**os.environ, "DBFLEET_DATABASE_URL": store_url, "DBFLEET_CONFIG": str(config)}
    return subprocess.Popen([DBFLEET, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def query_stats_runs(store) -> int:
    async with store.raw() as conn:
        return await conn.fetchval("select count(*) from collector_runs where collector = 'query_stats' "
                                   "and status = 'ok'")


async def _more_runs(store, at_least: int) -> bool:
    return await query_stats_runs(store) >= at_least


async def wait_for(probe, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"not reached within {timeout_s}s")
