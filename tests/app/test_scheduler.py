"""The worker: shard resolution, per-collector intervals, upkeep, and run_worker against the store."""

from __future__ import annotations

import asyncio

import pytest

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.scheduler import collector_intervals, resolve_shard, run_worker, upkeep
from app.settings import Settings
from app.sweep import Shard
from collectors.registry import collector_names


@pytest.mark.parametrize("kwargs, hostname, shard", [
    ({}, None, Shard(0, 1)),
    ({"worker": {"shard": "1/3"}}, None, Shard(1, 3)),
    ({"worker": {"shard": "0/3"}, "shard": "2/4"}, None, Shard(2, 4)),
    ({"shard": "auto", "shard_count": 3}, "dbfleet-worker-2", Shard(2, 3)),
    ({"worker": {"shard": "auto", "shard_count": 5}}, "dbfleet-worker-0", Shard(0, 5)),
    ({"shard": "auto", "worker": {"shard_count": 4}}, "my-release-dbfleet-worker-3", Shard(3, 4)),
])
def test_resolve_shard(kwargs, hostname, shard):
    assert resolve_shard(Settings(**kwargs), hostname) == shard


@pytest.mark.parametrize("kwargs, hostname, message", [
    ({"shard": "auto"}, "dbfleet-worker-2", "needs the shard count"),
    ({"shard": "auto", "shard_count": 3}, "dbfleet-worker", "does not end in a StatefulSet ordinal"),
    ({"shard": "auto", "shard_count": 3}, "dbfleet-worker-5", "need 0 <= i < N"),
    ({"shard": "3/3"}, None, "need 0 <= i < N"),
    ({"shard": "one/two"}, None, "must be i/N"),
])
def test_resolve_shard_rejects(kwargs, hostname, message):
    with pytest.raises(ValueError, match=message):
        resolve_shard(Settings(**kwargs), hostname)


def test_collector_intervals_follow_config_and_skip_disabled():
    default = collector_intervals(Settings())
    assert set(default) == set(collector_names())
    assert default["health"] == 60
    tuned = collector_intervals(Settings(collectors={"health": {"interval_s": 15}, "replication": {"enabled": False}}))
    assert tuned["health"] == 15 and "replication" not in tuned


async def test_upkeep_drops_runs_past_retention(clean_store):
    async with clean_store.raw() as conn:
        iid = await conn.fetchval("insert into instances (name, engine, host, port, dbname, \"user\", tls_mode) "
                                  "values ('u', 'postgres', 'h', 1, '', '', 'prefer') returning id")
        await conn.execute(
            "insert into collector_runs (instance_id, collector, started_at, duration_ms, status, findings) values "
            "($1, 'health', now() - interval '30 days', 1, 'ok', 0), ($1, 'health', now() - interval '1 day', 1, 'ok', 0)",
            iid)
    await upkeep(clean_store, Settings(store={"retention_days": 14}))
    async with clean_store.raw() as conn:
        ages = await conn.fetch("select now() - started_at as age from collector_runs")
    assert len(ages) == 1 and ages[0]["age"].days < 14


async def test_run_worker_collects_then_stops(clean_store, target_db):
    db = await target_db()
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [InstanceIn(name="w1", engine="postgres", host="127.0.0.1", dbname=db,
                                                    user="postgres")], actor="test")
    settings = Settings(worker={"metrics_port": 0, "backoff_base_s": 0},
                        collectors={name: {"enabled": name == "health"} for name in collector_names()})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(clean_store, settings, stop))
    try:
        runs = []
        for _ in range(300):
            async with clean_store.raw() as conn:
                runs = await conn.fetch("select collector, status from collector_runs")
            if runs or worker.done():
                break
            await asyncio.sleep(0.05)
        assert not worker.done(), worker.exception() if worker.done() else None
        assert [tuple(r) for r in runs] == [("health", "ok")]
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    assert worker.exception() is None
