"""Sharded workers against one store: each instance swept once per round, handovers never double-run.

Real Sweepers, a real store and real target databases on 127.0.0.1:5432. Only the health and
replication collectors run (cheap). For the handover, each collector run is stretched a little so
that the old and the new sweepers really do meet on the same instances.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

import app.sweep as sweep_module
from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.settings import Settings
from app.sweep import Shard, Sweeper

COLLECTORS = ["partitions", "query_stats"]  # database-level: every entry runs them
TARGETS = 4          # databases
ENTRIES_PER_DB = 3   # inventory entries per database: 12 instances, enough for every shard to own some


@pytest.fixture
async def fleet(clean_store, target_db):
    """12 instances over 4 fresh databases; yields their names."""
    dbs = [await target_db(prefix="dbf_bench_shard") for _ in range(TARGETS)]
    items = [InstanceIn(name=f"shard-{db[-10:]}-{k}", engine="postgres", host="127.0.0.1", port=5432, dbname=db,
                        user="postgres", tls_mode="disable", tags={"suite": "sharding"})
             for db in dbs for k in range(ENTRIES_PER_DB)]
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, items, actor="test")
    async with clean_store.raw() as conn:
        await conn.execute("truncate collector_runs")
    return sorted(i.name for i in items)


def sweepers(store, count: int) -> list[Sweeper]:
    settings = Settings(worker={"backoff_base_s": 0, "concurrency": 4})
    return [Sweeper(store, settings, Shard(i, count)) for i in range(count)]


async def owned(sweeper: Sweeper) -> set[str]:
    return {i.name for i in await sweeper.instances()}


async def runs(store) -> list[dict]:
    async with store.raw() as conn:
        rows = await conn.fetch(
            "select i.name, r.collector, r.status, r.started_at, r.duration_ms from collector_runs r "
            "join instances i on i.id = r.instance_id where r.collector = any($1::text[]) order by r.started_at",
            COLLECTORS)
    return [dict(r) for r in rows]


async def close_all(*groups: list[Sweeper]) -> None:
    for group in groups:
        for s in group:
            await s.close()


async def test_every_instance_swept_exactly_once_per_round(clean_store, fleet):
    workers = sweepers(clean_store, 3)
    try:
        shards = [await owned(w) for w in workers]
        assert set().union(*shards) == set(fleet)
        assert sum(len(s) for s in shards) == len(fleet), "shards overlap"
        assert all(shards), "a shard owns nothing: the test would not show the split"
        for round_no in range(1, 3):
            summaries = await asyncio.gather(*(w.sweep(COLLECTORS) for w in workers))
            assert sum(s.failed for s in summaries) == 0, [s.errors for s in summaries]
            per = Counter((r["name"], r["collector"]) for r in await runs(clean_store) if r["status"] == "ok")
            assert set(per) == {(n, c) for n in fleet for c in COLLECTORS}
            assert set(per.values()) == {round_no}
    finally:
        await close_all(workers)


async def test_resharding_reassigns_without_double_runs(clean_store, fleet, monkeypatch):
    old, new = sweepers(clean_store, 2), sweepers(clean_store, 3)
    try:
        old_owner = {n: i for i, w in enumerate(old) for n in await owned(w)}
        new_owner = {n: i for i, w in enumerate(new) for n in await owned(w)}
        assert set(old_owner) == set(new_owner) == set(fleet)
        assert any(old_owner[n] != new_owner[n] for n in fleet), "2 -> 3 moved nothing"

        real = sweep_module.run_collector

        async def slow_run(spec, conn, ctx):
            await asyncio.sleep(0.15)  # widen each run so that old and new workers overlap on instances
            return await real(spec, conn, ctx)

        monkeypatch.setattr(sweep_module, "run_collector", slow_run)
        summaries = await asyncio.gather(*(w.sweep(COLLECTORS) for w in old + new))
        assert sum(s.failed for s in summaries) == 0, [s.errors for s in summaries]
    finally:
        await close_all(old, new)

    rows = await runs(clean_store)
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_key[(r["name"], r["collector"])].append(r)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped, "old and new workers never met on an instance: the lock was not exercised"
    assert sum(s.skipped for s in summaries) == len(skipped)
    for key, group in by_key.items():
        ok = sorted((r for r in group if r["status"] == "ok"), key=lambda r: r["started_at"])
        assert ok, f"{key} never ran"
        for a, b in zip(ok, ok[1:]):
            end = a["started_at"] + timedelta(milliseconds=a["duration_ms"])
            assert end <= b["started_at"], f"{key}: runs overlap ({a['started_at']} +{a['duration_ms']} ms, {b['started_at']})"
        # Each instance is owned by exactly one old and one new worker: at most two runs, and
        # every attempt that did not run was recorded as skipped.
        assert len(group) == 2, f"{key}: {[(r['status']) for r in group]}"
