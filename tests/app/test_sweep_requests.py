"""Workers claim requested sweeps: their own shard's items only, once each, under a lease that a
dead worker lets run out. Requests are written through the API, run against real target databases."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from app.sweep import Shard, Sweeper, SweepSummary
from app.sweep_requests import (MAX_ATTEMPTS, ClaimedItem, Outcome, claim_items, claimer_name, outcome_of,
                                record_outcome, requeue_expired, run_sweep_requests)


@pytest.fixture
async def api(client, keys, clean_store):
    async with clean_store.raw() as conn:
        await conn.execute("truncate sweep_requests restart identity cascade")
    headers = {"Authorization": f"Bearer {keys['operator']}"}
    admin = {"Authorization": f"Bearer {keys['admin']}"}

    async def add_instance(name: str, dbname: str = "postgres", port: int = 5432) -> int:
        r = await client.post("/api/v1/instances", headers=admin, json={
            "name": name, "engine": "postgres", "host": "127.0.0.1", "port": port, "dbname": dbname,
            "user": "postgres"})
        assert r.status_code == 201, r.text
        async with clean_store.raw() as conn:
            return await conn.fetchval("select id from instances where name = $1", name)

    async def request_sweep(**body) -> int:
        r = await client.post("/api/v1/sweeps", headers=headers, json={"collectors": ["health"], **body})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    async def sweep(sweep_id: int) -> dict:
        return (await client.get(f"/api/v1/sweeps/{sweep_id}", headers=headers)).json()

    return add_instance, request_sweep, sweep


@pytest.fixture
async def sweepers(clean_store, settings):
    made: list[Sweeper] = []

    def make(shard: Shard) -> Sweeper:
        made.append(Sweeper(clean_store, settings, shard))
        return made[-1]

    yield make
    for s in made:
        await s.close()


async def _health_runs(store) -> dict[str, int]:
    async with store.raw() as conn:
        rows = await conn.fetch("select i.name, count(*) as n from collector_runs r join instances i "
                                "on i.id = r.instance_id where r.collector = 'health' group by i.name")
    return {r["name"]: r["n"] for r in rows}


async def test_two_shards_at_once_each_run_exactly_their_own_items(api, sweepers, clean_store, target_db):
    add_instance, request_sweep, sweep = api
    dbs = [await target_db(), await target_db()]
    ids = {f"pg-{n}": await add_instance(f"pg-{n}", dbs[n % 2]) for n in range(6)}
    shards = [Shard(0, 2), Shard(1, 2)]
    owner = {name: next(s for s in shards if s.owns(i)) for name, i in ids.items()}
    assert {owner[n] for n in ids} == set(shards), "both shards need instances for this test"
    sweep_id = await request_sweep()

    ran = await asyncio.gather(*(run_sweep_requests(clean_store, sweepers(s), s, claimer=f"worker {s.index}/2")
                                 for s in shards))
    assert ran == [sum(owner[n] == s for n in ids) for s in shards]
    got = await sweep(sweep_id)
    assert got["status"] == "done", got
    assert {x["instance"]: x["claimed_by"] for x in got["results"]} == {
        n: f"worker {owner[n].index}/2" for n in ids}
    assert {x["attempts"] for x in got["results"]} == {1}
    assert await _health_runs(clean_store) == {n: 1 for n in ids}  # none twice


async def test_queued_items_follow_a_re_shard(api, sweepers, clean_store, target_db):
    """No shard number is frozen on an item: what 1/2 left queued, a worker of 0/1 later runs."""
    add_instance, request_sweep, sweep = api
    db = await target_db()
    ids = {f"pg-{n}": await add_instance(f"pg-{n}", db) for n in range(4)}
    theirs = sorted(n for n, i in ids.items() if not Shard(0, 2).owns(i))
    assert theirs and len(theirs) < len(ids)
    sweep_id = await request_sweep()
    await run_sweep_requests(clean_store, sweepers(Shard(0, 2)), Shard(0, 2))
    got = await sweep(sweep_id)
    assert sorted(x["instance"] for x in got["results"] if x["status"] == "queued") == theirs
    assert got["status"] == "running"
    assert await run_sweep_requests(clean_store, sweepers(Shard(0, 1)), Shard(0, 1)) == len(theirs)
    assert (await sweep(sweep_id))["status"] == "done"


async def test_a_claim_whose_lease_ran_out_is_requeued_and_completed(api, sweepers, clean_store, target_db):
    add_instance, request_sweep, sweep = api
    await add_instance("pg-0", await target_db())
    sweep_id = await request_sweep()
    async with clean_store.raw() as conn:  # a worker claims it, then dies without renewing
        [dead] = await claim_items(conn, Shard(), "dead worker", limit=10, lease_s=0.1)
    assert (await sweep(sweep_id))["status"] == "running"
    await asyncio.sleep(0.3)

    assert await run_sweep_requests(clean_store, sweepers(Shard()), Shard(), claimer="live worker") == 1
    [item] = (await sweep(sweep_id))["results"]
    assert (item["status"], item["attempts"], item["claimed_by"], item["ok"]) == ("done", 2, "live worker", 1)
    async with clean_store.raw() as conn:  # the dead worker's late word does not overwrite it
        await record_outcome(conn, dead, "dead worker", Outcome("failed", error="late"))
    assert (await sweep(sweep_id))["results"][0]["status"] == "done"
    assert await _health_runs(clean_store) == {"pg-0": 1}


async def test_an_item_is_given_up_after_max_attempts(api, clean_store):
    add_instance, request_sweep, sweep = api
    await add_instance("pg-0")
    sweep_id = await request_sweep()
    async with clean_store.raw() as conn:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            [item] = await claim_items(conn, Shard(), f"crashing worker {attempt}", limit=10, lease_s=0)
            assert item.attempts == attempt
            assert await requeue_expired(conn) == 1
        assert await claim_items(conn, Shard(), "anyone", limit=10) == []
    got = await sweep(sweep_id)
    assert got["status"] == "failed" and got["finished_at"] is not None
    assert got["results"][0]["error"] == (f"given up after {MAX_ATTEMPTS} claims whose lease ran out "
                                          f"(last held by crashing worker {MAX_ATTEMPTS})")


async def test_a_slow_instance_keeps_its_claim_while_it_runs(api, sweepers, clean_store):
    """A server that accepts and never answers holds the sweep for the connect timeout (2 s),
    past a 0.9 s lease: the running claimer renews it, so nobody re-queues the item meanwhile."""
    add_instance, request_sweep, sweep = api

    async def never_answer(reader, writer):
        await reader.read()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    try:
        await add_instance("pg-silent", port=server.sockets[0].getsockname()[1])
        sweep_id = await request_sweep()
        task = asyncio.create_task(run_sweep_requests(clean_store, sweepers(Shard()), Shard(), lease_s=0.9,
                                                      claimer="slow worker"))
        await asyncio.sleep(1.2)
        assert not task.done()
        async with clean_store.raw() as conn:
            assert await requeue_expired(conn) == 0
        assert await asyncio.wait_for(task, 30) == 1
    finally:
        server.close()
    [item] = (await sweep(sweep_id))["results"]
    assert (item["status"], item["attempts"], item["claimed_by"]) == ("failed", 1, "slow worker")
    assert item["error"]


async def test_an_item_whose_collectors_are_busy_is_retried(api, sweepers, clean_store, target_db):
    """Another run holds (instance, health) — the sweeper's advisory lock, keyed by crc32 of the
    collector name — so the first try runs nothing: the item goes back to the queue, not to failed."""
    add_instance, request_sweep, sweep = api
    iid = await add_instance("pg-0", await target_db())
    sweep_id = await request_sweep()
    sweeper = sweepers(Shard())
    async with clean_store.raw() as holder:
        await holder.execute("select pg_advisory_lock($1, $2)", iid, zlib.crc32(b"health") & 0x7FFFFFFF)
        await run_sweep_requests(clean_store, sweeper, Shard(), busy_retry_s=1.0)
        await holder.execute("select pg_advisory_unlock_all()")
    [item] = (await sweep(sweep_id))["results"]
    assert (item["status"], item["attempts"], item["skipped"]) == ("queued", 1, 1)
    assert await run_sweep_requests(clean_store, sweeper, Shard()) == 0  # not before 1 s
    await asyncio.sleep(1.1)
    assert await run_sweep_requests(clean_store, sweeper, Shard()) == 1
    [item] = (await sweep(sweep_id))["results"]
    assert (item["status"], item["attempts"], item["ok"]) == ("done", 2, 1)


async def test_an_instance_disabled_after_the_request_fails_its_item(api, sweepers, client, keys, clean_store):
    add_instance, request_sweep, sweep = api
    await add_instance("pg-0")
    sweep_id = await request_sweep()
    r = await client.patch("/api/v1/instances/pg-0", json={"enabled": False},
                           headers={"Authorization": f"Bearer {keys['admin']}"})
    assert r.status_code == 200, r.text
    await run_sweep_requests(clean_store, sweepers(Shard()), Shard())
    [item] = (await sweep(sweep_id))["results"]
    assert item["status"] == "failed" and item["error"].startswith("not swept: the instance was disabled")
    assert await _health_runs(clean_store) == {}


@pytest.mark.parametrize("summary, outcome", [
    (SweepSummary(["health"], instances=1, ok=3), Outcome("done", ok=3)),
    (SweepSummary(["health"], instances=1, ok=2, skipped=1), Outcome("done", ok=2, skipped=1)),
    (SweepSummary(["health"], instances=1, ok=1, failed=1, errors={"db": "boom"}),
     Outcome("failed", ok=1, failed=1, error="boom")),
    (SweepSummary(["health"], instances=1, skipped=2), Outcome("queued", skipped=2)),
    (SweepSummary(["health"], instances=0),
     Outcome("failed", error="not swept: the instance was disabled or removed after the request")),
])
def test_outcome_of_one_instance_sweep(summary, outcome):
    assert outcome_of(summary, "db") == outcome


async def test_a_busy_item_on_its_last_attempt_is_failed(api, clean_store):
    add_instance, request_sweep, sweep = api
    await add_instance("pg-0")
    sweep_id = await request_sweep()
    async with clean_store.raw() as conn:
        await conn.execute("update sweep_request_items set attempts = $1", MAX_ATTEMPTS - 1)
        [item] = await claim_items(conn, Shard(), "w", limit=1)
        assert isinstance(item, ClaimedItem) and item.attempts == MAX_ATTEMPTS
        await record_outcome(conn, item, "w", Outcome("queued", skipped=1))
    [got] = (await sweep(sweep_id))["results"]
    assert got["status"] == "failed" and got["error"].startswith(f"every collector was skipped on {MAX_ATTEMPTS}")


def test_claimer_name_says_host_process_and_shard():
    assert claimer_name(Shard(1, 3)).endswith(" shard 1/3") and " pid " in claimer_name(Shard())
