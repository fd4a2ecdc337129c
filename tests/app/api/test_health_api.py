"""/healthz, /readyz (503 on an un-migrated store), /metrics, and refusing an un-migrated store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from app.db import StoreNotReady
from app.main import create_app
from app.settings import Settings

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
async def empty_store_url() -> AsyncIterator[str]:
    """A database that exists but was never migrated."""
    name = f"dbf_t_empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'create database "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.close()


async def test_healthz_and_readyz(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})


async def test_readyz_is_503_on_an_unmigrated_store(empty_store_url):
    app = create_app(Settings(), empty_store_url, check_migrated=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/healthz")).status_code == 200
            r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not ready"
    assert "run `dbfleet migrate`" in r.json()["reason"] and "migration none" in r.json()["reason"]


async def test_readyz_is_503_when_the_store_is_unreachable():
    app = create_app(Settings(), "postgresql://postgres:hunter2@127.0.0.1:1/nowhere", check_migrated=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/readyz")
    assert r.status_code == 503 and "unreachable" in r.json()["reason"]
    assert "hunter2" not in r.text and "postgres:***@127.0.0.1:1" in r.text


async def test_the_api_refuses_to_start_on_an_unmigrated_store(empty_store_url):
    app = create_app(Settings(), empty_store_url)
    with pytest.raises(StoreNotReady, match="run `dbfleet migrate`"):
        async with app.router.lifespan_context(app):
            pass


async def test_metrics(client, auth, target_db, clean_store, settings):
    from app.sweep import Shard, Sweeper
    from app.sweep_requests import run_sweep_requests

    db = await target_db()
    await client.post("/api/v1/instances", headers=auth["admin"], json={
        "name": "m1", "engine": "postgres", "host": "127.0.0.1", "dbname": db, "user": "postgres"})
    await client.post("/api/v1/instances", headers=auth["admin"], json={
        "name": "m-down", "engine": "postgres", "host": "127.0.0.1", "port": 1})
    assert (await client.post("/api/v1/sweeps", json={"collectors": ["health"]},
                              headers=auth["operator"])).status_code == 202
    sweeper = Sweeper(clean_store, settings)  # a worker's job runs the requested sweep (same process here)
    assert await run_sweep_requests(clean_store, sweeper, Shard()) == 2
    await sweeper.close()
    text = (await client.get("/metrics")).text
    assert 'dbfleet_findings_open{check="instance_unreachable",severity="critical"} 1.0' in text
    assert 'dbfleet_collector_run_duration_seconds_bucket{collector="health"' in text
    assert 'dbfleet_instances{engine="postgres"} 2.0' in text
    assert 'dbfleet_instance_up{engine="postgres",instance="m1"} 1.0' in text
    assert 'dbfleet_instance_up{engine="postgres",instance="m-down"} 0.0' in text
    assert 'dbfleet_collector_runs_total{collector="health",status="error"}' in text
    assert "dbfleet_outbox_pending" in text
