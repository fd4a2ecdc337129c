"""POST /api/v1/sweeps runs a real sweep; /api/v1/runs lists what it recorded."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture
async def fleet(client, auth, target_db) -> list[str]:
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


async def test_sweep_runs_now_and_runs_are_listed(client, auth, fleet):
    r = await client.post("/api/v1/sweeps", json={"collectors": ["health"]}, headers=auth["operator"])
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["status"], s["instances"], s["ok"], s["failed"], s["collectors"]) == ("done", 3, 2, 1, ["health"])
    assert "cannot connect to 127.0.0.1:1" in s["errors"]["pg-down"]
    assert s["wall_s"] >= 0 and s["cpu_s"] >= 0 and s["findings_open"] >= 1

    runs = (await client.get("/api/v1/runs", headers=auth["viewer"])).json()
    health = {r["instance"]: r for r in runs if r["collector"] == "health"}
    assert {k: v["status"] for k, v in health.items()} == {"pg-0": "ok", "pg-1": "ok", "pg-down": "error"}
    assert health["pg-down"]["error"].startswith("cannot connect")
    assert all(r["duration_ms"] >= 0 for r in runs)

    async def listed(**params) -> list[tuple[str, str, str]]:
        resp = await client.get("/api/v1/runs", params=params, headers=auth["viewer"])
        assert resp.status_code == 200, resp.text
        return [(x["instance"], x["collector"], x["status"]) for x in resp.json()]

    assert await listed(instance="pg-1") == [("pg-1", "health", "ok")]
    assert set(await listed(status="error")) == {("pg-down", "health", "error")}
    assert set(await listed(collector="connectivity")) == {("pg-down", "connectivity", "ok")}
    assert len(await listed(limit=1)) == 1
    assert await listed(since="2999-01-01T00:00:00Z") == []
    assert (await client.get("/api/v1/runs", params={"status": "bad"}, headers=auth["viewer"])).status_code == 422

    findings = (await client.get("/api/v1/findings", params={"check": "instance_unreachable"},
                                 headers=auth["viewer"])).json()["items"]
    assert [(f["instance"], f["severity"]) for f in findings] == [("pg-down", "critical")]


async def test_sweep_selects_by_instance_and_tag(client, auth, fleet):
    r = await client.post("/api/v1/sweeps", json={"collectors": ["health"], "instances": ["pg-1"]},
                          headers=auth["operator"])
    assert (r.json()["instances"], r.json()["ok"]) == (1, 1)
    r = await client.post("/api/v1/sweeps", json={"collectors": ["health"], "tags": ["env=prod"]},
                          headers=auth["admin"])
    assert (r.json()["instances"], r.json()["ok"]) == (1, 1)
    runs = (await client.get("/api/v1/runs", params={"collector": "health"}, headers=auth["viewer"])).json()
    assert sorted(x["instance"] for x in runs) == ["pg-0", "pg-1"]


async def test_sweep_in_the_background(client, auth, fleet):
    r = await client.post("/api/v1/sweeps", json={"collectors": ["health"], "wait": False}, headers=auth["operator"])
    assert r.json() == {"status": "started"}
    for _ in range(200):
        runs = (await client.get("/api/v1/runs", params={"collector": "health"}, headers=auth["viewer"])).json()
        if len(runs) == 3:
            break
        await asyncio.sleep(0.05)
    assert len(runs) == 3


@pytest.mark.parametrize("payload, field", [
    ({"collectors": ["nope"]}, "collectors: unknown nope"),
    ({"tags": ["env"]}, "tags: tag selector 'env'"),
])
async def test_bad_sweep_requests_are_422(client, auth, payload, field):
    r = await client.post("/api/v1/sweeps", json=payload, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["detail"].startswith(field)


async def test_unknown_sweep_field_is_422(client, auth):
    r = await client.post("/api/v1/sweeps", json={"colectors": ["health"]}, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "colectors"]


async def test_sweeps_need_the_operator_role(client, auth):
    r = await client.post("/api/v1/sweeps", json={}, headers=auth["viewer"])
    assert r.status_code == 403
    assert (await client.post("/api/v1/sweeps", json={})).status_code == 401
    assert (await client.get("/api/v1/runs")).status_code == 401
