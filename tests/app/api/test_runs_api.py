"""POST /api/v1/sweeps queues a sweep that a worker runs; GET reports it; /api/v1/runs lists the runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from app.api.runs import ItemCounts, sweep_status
from app.scheduler import run_worker
from app.settings import Settings
from app.sweep import Shard, Sweeper
from app.sweep_requests import run_sweep_requests
from collectors.registry import collector_names

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def no_sweeps(clean_store):
    async with clean_store.raw() as conn:
        await conn.execute("truncate sweep_requests restart identity cascade")
    return clean_store


@pytest.fixture
async def fleet(client, auth, target_db, no_sweeps) -> list[str]:
    dbs = [await target_db(), await target_db()]
    for i, db in enumerate(dbs):
        r = await client.post("/api/v1/instances", headers=auth["admin"], json={
            "name": f"pg-{i}", "engine": "postgres", "host": "127.0.0.1", "port": 5432, "dbname": db,
            "user": "postgres", "tags": {"env": "prod" if i == 0 else "dev"}})
        assert r.status_code == 201
    r = await client.post("/api/v1/instances", headers=auth["admin"], json={
        "name": "pg-down", "engine": "postgres", "host": "127.0.0.1", "port": 1, "user": "postgres"})
    assert r.status_code == 201
    return dbs


@pytest.fixture
async def worker(clean_store, settings):
    """What a one-shard worker's sweep-requests job does, one pass per call."""
    sweeper = Sweeper(clean_store, settings, Shard())

    async def one_pass() -> int:
        return await run_sweep_requests(clean_store, sweeper, Shard())

    yield one_pass
    await sweeper.close()


async def _count(store, sql: str) -> int:
    async with store.raw() as conn:
        return await conn.fetchval(sql)


async def test_a_sweep_is_queued_and_runs_only_when_a_worker_claims_it(client, auth, fleet, clean_store, worker):
    r = await client.post("/api/v1/sweeps", json={"collectors": ["partitions"]}, headers=auth["operator"])
    assert r.status_code == 202, r.text
    s = r.json()
    assert (s["status"], s["items"], s["counts"]["queued"], s["collectors"]) == ("queued", 3, 3, ["partitions"])
    assert s["requested_by"] == "test-operator" and s["finished_at"] is None
    assert s["links"]["self"] == r.headers["location"] == f"/api/v1/sweeps/{s['id']}"
    await asyncio.sleep(0.3)
    assert await _count(clean_store, "select count(*) from collector_runs") == 0
    assert (await client.get(s["links"]["self"], headers=auth["viewer"])).json()["status"] == "queued"
    async with clean_store.raw() as conn:
        audit = await conn.fetchrow("select actor, target, details from audit_log where action = 'sweep.request'")
    assert (audit["actor"], audit["target"], audit["details"]["items"]) == ("test-operator", f"sweep {s['id']}", 3)

    assert await worker() == 3
    got = (await client.get(s["links"]["self"], headers=auth["viewer"])).json()
    assert got["status"] == "failed" and got["finished_at"] is not None  # pg-down could not be reached
    assert {k: v for k, v in got["counts"].items() if v} == {"done": 2, "failed": 1}
    results = {x["instance"]: x for x in got["results"]}
    assert {n: (x["status"], x["ok"], x["failed"]) for n, x in results.items()} == {
        "pg-0": ("done", 1, 0), "pg-1": ("done", 1, 0), "pg-down": ("failed", 0, 1)}
    assert "cannot connect to 127.0.0.1:1" in results["pg-down"]["error"]
    assert all(x["started_at"] <= x["finished_at"] and x["attempts"] == 1 for x in results.values())
    assert await worker() == 0  # nothing is run twice


async def test_runs_recorded_by_a_requested_sweep_are_listed(client, auth, fleet, worker):
    await client.post("/api/v1/sweeps", json={"collectors": ["partitions"]}, headers=auth["operator"])
    await worker()
    runs = (await client.get("/api/v1/runs", headers=auth["viewer"])).json()
    partitions = {r["instance"]: r for r in runs if r["collector"] == "partitions"}
    assert {k: v["status"] for k, v in partitions.items()} == {"pg-0": "ok", "pg-1": "ok", "pg-down": "error"}
    assert partitions["pg-down"]["error"].startswith("cannot connect")
    assert all(r["duration_ms"] >= 0 for r in runs)

    async def listed(**params) -> list[tuple[str, str, str]]:
        resp = await client.get("/api/v1/runs", params=params, headers=auth["viewer"])
        assert resp.status_code == 200, resp.text
        return [(x["instance"], x["collector"], x["status"]) for x in resp.json()]

    assert await listed(instance="pg-1") == [("pg-1", "partitions", "ok")]
    assert set(await listed(status="error")) == {("pg-down", "partitions", "error")}
    assert set(await listed(collector="connectivity")) == {("pg-down", "connectivity", "ok")}
    assert len(await listed(limit=1)) == 1
    assert await listed(since="2999-01-01T00:00:00Z") == []
    assert (await client.get("/api/v1/runs", params={"status": "bad"}, headers=auth["viewer"])).status_code == 422
    findings = (await client.get("/api/v1/findings", params={"check": "instance_unreachable"},
                                 headers=auth["viewer"])).json()["items"]
    assert [(f["instance"], f["severity"]) for f in findings] == [("pg-down", "critical")]


async def test_a_sweep_selects_by_instance_and_tag(client, auth, fleet, worker):
    r = await client.post("/api/v1/sweeps", json={"collectors": ["partitions"], "instances": ["pg-1", "pg-1"]},
                          headers=auth["operator"])
    assert (r.status_code, r.json()["items"]) == (202, 1)
    r = await client.post("/api/v1/sweeps", json={"collectors": ["partitions"], "tags": ["env=prod"]},
                          headers=auth["admin"])
    assert r.json()["items"] == 1 and r.json()["selector"] == {"instances": [], "tags": ["env=prod"]}
    assert await worker() == 2
    runs = (await client.get("/api/v1/runs", params={"collector": "partitions"}, headers=auth["viewer"])).json()
    assert sorted(x["instance"] for x in runs) == ["pg-0", "pg-1"]


async def test_wait_holds_the_answer_until_a_worker_finishes(client, auth, fleet, worker):
    async def worker_soon() -> int:
        await asyncio.sleep(0.3)  # the POST below is waiting by then
        return await worker()

    ran = asyncio.create_task(worker_soon())
    r = await client.post("/api/v1/sweeps", json={"collectors": ["partitions"], "instances": ["pg-0"], "wait": True},
                          headers=auth["operator"])
    assert await ran == 1
    assert (r.status_code, r.json()["status"], r.json()["counts"]["done"]) == (202, "done", 1)


async def test_wait_gives_up_after_wait_s_and_says_queued(client, auth, fleet):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await client.post("/api/v1/sweeps", json={"collectors": ["partitions"], "wait": True, "wait_s": 0.5},
                          headers=auth["operator"])
    assert loop.time() - t0 >= 0.5
    assert r.json()["status"] == "queued"
    # While the POST waited, another request with the same key was answered (its key row is not held).
    assert (await client.get("/api/v1/sweeps", headers=auth["operator"])).status_code == 200


async def test_a_running_worker_picks_up_a_requested_sweep(client, auth, fleet, clean_store):
    r = await client.post("/api/v1/sweeps", json={"collectors": ["partitions"], "instances": ["pg-0", "pg-1"]},
                          headers=auth["operator"])
    settings = Settings(worker={"metrics_port": 0, "backoff_base_s": 0},
                        collectors={name: {"enabled": name == "partitions"} for name in collector_names()})
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(clean_store, settings, stop, serve_metrics=False))
    try:
        got = {}
        for _ in range(300):  # a first claim can find partitions busy with the worker's own scheduled run
            got = (await client.get(r.json()["links"]["self"], headers=auth["viewer"])).json()
            if got["status"] not in ("queued", "running") or task.done():
                break
            await asyncio.sleep(0.1)
        assert not task.done(), task.exception() if task.done() else None
        assert got["status"] == "done", got
        assert [(x["instance"], x["ok"]) for x in got["results"]] == [("pg-0", 1), ("pg-1", 1)]
        assert all(" shard 0/1" in x["claimed_by"] for x in got["results"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_recent_sweeps_are_listed_newest_first(client, auth, fleet):
    ids = [(await client.post("/api/v1/sweeps", json={"instances": [n]}, headers=auth["operator"])).json()["id"]
           for n in ("pg-0", "pg-1")]
    listed = (await client.get("/api/v1/sweeps", headers=auth["viewer"])).json()
    assert [x["id"] for x in listed] == ids[::-1]
    assert listed[0]["collectors"] is None and listed[0]["status"] == "queued"
    assert len((await client.get("/api/v1/sweeps", params={"limit": 1}, headers=auth["viewer"])).json()) == 1
    assert (await client.get("/api/v1/sweeps/999999", headers=auth["viewer"])).status_code == 404


async def test_cancel_stops_what_no_worker_has_started(client, auth, fleet, clean_store, worker):
    s = (await client.post("/api/v1/sweeps", json={"collectors": ["partitions"]}, headers=auth["operator"])).json()
    r = await client.post(f"/api/v1/sweeps/{s['id']}:cancel", headers=auth["operator"])
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["counts"]["cancelled"]) == ("cancelled", 3)
    assert (await client.post(f"/api/v1/sweeps/{s['id']}:cancel", headers=auth["operator"])).status_code == 409
    assert await worker() == 0
    assert await _count(clean_store, "select count(*) from collector_runs") == 0
    assert await _count(clean_store, "select count(*) from audit_log where action = 'sweep.cancel'") == 1


@pytest.mark.parametrize("payload, field", [
    ({"collectors": ["nope"]}, "collectors: unknown nope"),
    ({"tags": ["env"]}, "body.tags.0: String should match pattern"),
    ({"instances": ["pg-0", "pg-9", "pg-8"]}, "instances: unknown pg-8, pg-9"),
    ({"instances": ["pg-off"]}, "instances: disabled pg-off"),
    ({"tags": ["env=nope"]}, "tags: no enabled instance matches env=nope"),
    ({"instances": ["pg-1"], "tags": ["env=prod"]}, "tags: no enabled instance among the named instances"),
])
async def test_bad_sweep_requests_are_422_and_write_nothing(client, auth, fleet, clean_store, payload, field):
    r = await client.post("/api/v1/instances", headers=auth["admin"], json={
        "name": "pg-off", "engine": "postgres", "host": "127.0.0.1", "user": "postgres", "enabled": False})
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/sweeps", json=payload, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["detail"].startswith(field), r.text
    assert await _count(clean_store, "select count(*) from sweep_requests") == 0
    assert await _count(clean_store, "select count(*) from audit_log where action like 'sweep.%'") == 0


async def test_an_empty_inventory_is_422(client, auth, no_sweeps):
    r = await client.post("/api/v1/sweeps", json={}, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["detail"] == "instances: the inventory has no enabled instance"


@pytest.mark.parametrize("payload, loc", [
    ({"colectors": ["partitions"]}, ["body", "colectors"]),
    ({"wait": True, "wait_s": 31}, ["body", "wait_s"]),
])
async def test_malformed_sweep_bodies_are_422(client, auth, payload, loc):
    r = await client.post("/api/v1/sweeps", json=payload, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == loc


async def test_sweeps_need_the_operator_role(client, auth, fleet):
    r = await client.post("/api/v1/sweeps", json={}, headers=auth["viewer"])
    assert r.status_code == 403
    assert (await client.post("/api/v1/sweeps/1:cancel", headers=auth["viewer"])).status_code == 403
    assert (await client.get("/api/v1/sweeps", headers=auth["viewer"])).json() == []
    assert (await client.post("/api/v1/sweeps", json={})).status_code == 401
    assert (await client.get("/api/v1/sweeps")).status_code == 401
    assert (await client.get("/api/v1/runs")).status_code == 401


def test_the_api_process_never_loads_the_sweeper():
    code = ("import sys; from app.main import create_app; from app.settings import Settings; "
            "create_app(Settings(), 'postgresql://127.0.0.1/none', check_migrated=False); "
            "print(sorted(m for m in sys.modules if m in ('app.sweep', 'app.sweep_requests', 'collectors.runner')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("counts, status", [
    ({"queued": 3}, "queued"),
    ({"queued": 2, "done": 1}, "running"),
    ({"running": 1, "failed": 1}, "running"),
    ({"done": 3}, "done"),
    ({"done": 2, "failed": 1, "cancelled": 1}, "failed"),
    ({"done": 1, "cancelled": 2}, "cancelled"),
])
def test_a_sweep_status_follows_its_instances(counts, status):
    assert sweep_status(ItemCounts(**counts)) == status
