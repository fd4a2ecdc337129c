"""Live troubleshooting API against real PostgreSQL 15 and MariaDB: sessions made by the test."""

from __future__ import annotations

import asyncio
import uuid

import aiomysql
import asyncpg
import pytest

from app.api import live
from app.settings import Settings
from collectors.common.blocking import tree_members
from tests.app.api.pg_lock_queue import assert_lock_queue_seen

BASE = "/api/v1/instances"


@pytest.fixture
def settings() -> Settings:
    return Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2},
                    live={"min_interval_s": 0, "allow_terminate": True})


async def _register(client, auth, name: str, **fields) -> None:
    r = await client.post(BASE, json={"name": name, **fields}, headers=auth["admin"])
    assert r.status_code == 201, r.text


@pytest.fixture
async def pg(client, auth, target_db):
    db = await target_db("create table t (id int primary key, v int); insert into t values (1, 0), (2, 0);",
                         prefix="dbf_live")
    await _register(client, auth, "live-pg", engine="postgres", host="127.0.0.1", port=5432, dbname=db,
                    user="postgres")
    return db


async def _pg(db):
    return await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database=db)


async def test_locks_give_the_tree_of_a_row_lock_and_two_waiters(client, auth, pg):
    await assert_lock_queue_seen(client, auth, "live-pg", lambda: _pg(pg))


async def test_explain_plans_a_select_and_audits_who_asked(client, auth, pg, clean_store):
    r = await client.post(f"{BASE}/live-pg/explain", json={"query": "select * from t where id = 1"},
                          headers=auth["viewer"])
    assert r.status_code == 200, r.text
    assert r.json()["plan"][0]["Plan"]["Node Type"] and "Scan" in r.json()["text"]
    generic = await client.post(f"{BASE}/live-pg/explain", json={"query": "select * from t where id = $1"},
                                headers=auth["viewer"])
    assert generic.status_code == 200, generic.text
    async with clean_store.raw() as conn:
        actors = [r["actor"] for r in await conn.fetch("select actor from audit_log where action = 'live.explain'")]
    assert actors == ["test-viewer", "test-viewer"]


REFUSED = [
    ("update", "update t set v = 3"),
    ("ddl", "create table x (a int)"),
    ("select then drop", "select 1; drop table t"),
    ("for update", "select * from t for update"),
    ("select into", "select * into x from t"),
    ("writing cte", "with d as (delete from t returning *) select * from d"),
]


@pytest.mark.parametrize("query", [q for _, q in REFUSED], ids=[i for i, _ in REFUSED])
async def test_explain_refuses_anything_but_one_select(client, auth, pg, query):
    r = await client.post(f"{BASE}/live-pg/explain", json={"query": query}, headers=auth["admin"])
    assert r.status_code == 422 and r.json()["detail"].startswith("refused:"), r.text
    conn = await _pg(pg)
    try:
        assert await conn.fetchval("select count(*) from t where v = 0") == 2
    finally:
        await conn.close()


async def test_explain_analyze_is_refused_unless_enabled_and_admin(client, auth, pg, settings):
    body = {"query": "select count(*) from t", "analyze": True}
    off = await client.post(f"{BASE}/live-pg/explain", json=body, headers=auth["admin"])
    assert off.status_code == 403 and "allow_analyze" in off.text
    settings.live.allow_analyze = True
    assert (await client.post(f"{BASE}/live-pg/explain", json=body, headers=auth["operator"])).status_code == 403
    on = await client.post(f"{BASE}/live-pg/explain", json=body, headers=auth["admin"])
    assert on.status_code == 200 and "Actual Rows" in on.text


async def test_terminate_with_a_stale_start_time_is_refused(client, auth, pg, clean_store):
    victim = await _pg(pg)
    pid = victim.get_server_pid()
    try:
        started = await victim.fetchval("select backend_start from pg_stat_activity where pid = pg_backend_pid()")
        stale = (started.replace(year=started.year - 1)).isoformat()
        r = await client.post(f"{BASE}/live-pg/sessions/{pid}:terminate", json={"started_at": stale},
                              headers=auth["operator"])
        assert r.status_code == 409, r.text
        assert await victim.fetchval("select 1") == 1, "still alive"
        denied = await client.post(f"{BASE}/live-pg/sessions/{pid}:terminate", json={"started_at": started.isoformat()},
                                   headers=auth["viewer"])
        assert denied.status_code == 403
        ok = await client.post(f"{BASE}/live-pg/sessions/{pid}:terminate", json={"started_at": started.isoformat()},
                               headers=auth["operator"])
        assert ok.status_code == 200, ok.text
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await victim.fetchval("select 1")
    finally:
        await victim.close()
    async with clean_store.raw() as conn:
        outcomes = [r["outcome"] for r in await conn.fetch("select outcome from audit_log where action = "
                                                           "'live.terminate' order by id")]
    assert outcomes == ["refused", "ok"]


async def test_terminate_is_off_unless_enabled(client, auth, pg, settings):
    settings.live.allow_terminate = False
    r = await client.post(f"{BASE}/live-pg/sessions/1:cancel", json={"started_at": "2020-01-01T00:00:00Z"},
                          headers=auth["operator"])
    assert r.status_code == 403 and "allow_terminate" in r.text


async def test_live_requests_are_rate_limited_per_instance(client, auth, pg, settings):
    live._last_request.clear()  # earlier tests in this process asked about live-pg too
    settings.live.min_interval_s = 30
    first = await client.get(f"{BASE}/live-pg/activity", headers=auth["viewer"])
    second = await client.get(f"{BASE}/live-pg/activity", headers=auth["viewer"])
    assert first.status_code == 200 and second.status_code == 429 and int(second.headers["Retry-After"]) >= 1


async def test_an_unreachable_database_is_a_502_with_the_reason(client, auth):
    await _register(client, auth, "live-gone", engine="postgres", host="127.0.0.1", port=1, user="postgres")
    r = await client.get(f"{BASE}/live-gone/activity", headers=auth["viewer"])
    assert r.status_code == 502 and "unreachable" in r.json()["detail"]


async def _my(db=None):
    return await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db=db, autocommit=True)


@pytest.fixture
async def my(client, auth):
    db = f"dbf_live_{uuid.uuid4().hex[:8]}"
    admin = await _my()
    async with admin.cursor() as c:
        await c.execute(f"create database {db}")
        await c.execute(f"create table {db}.t (id int primary key, v int) engine=innodb")
        await c.execute(f"insert into {db}.t values (1, 0)")
    await _register(client, auth, "live-my", engine="mariadb", host="127.0.0.1", port=3306, dbname=db, user="root")
    yield db
    async with admin.cursor() as c:
        await c.execute(f"drop database {db}")
    admin.close()


async def test_mariadb_locks_explain_and_stale_kill(client, auth, my):
    holder, waiter = await _my(my), await _my(my)
    async with holder.cursor() as c:
        await c.execute("begin")
        await c.execute("update t set v = 1 where id = 1")

    async def wait():
        async with waiter.cursor() as c:
            await c.execute("update t set v = 2 where id = 1")

    task = asyncio.create_task(wait())
    await asyncio.sleep(1)
    try:
        r = await client.get(f"{BASE}/live-my/locks", headers=auth["viewer"])
        stale = await client.post(f"{BASE}/live-my/sessions/{holder.thread_id()}:terminate",
                                  json={"started_at": "2001-01-01T00:00:00"}, headers=auth["operator"])
    finally:
        await holder.rollback()
        await task
    [tree] = [t for t in r.json()["trees"] if t["session_id"] == holder.thread_id()]
    assert [n["session_id"] for n in tree_members(tree)] == [waiter.thread_id()]
    assert stale.status_code == 409
    plan = await client.post(f"{BASE}/live-my/explain", json={"query": "select * from t where id = 1"},
                             headers=auth["viewer"])
    assert plan.status_code == 200 and "query_block" in plan.json()["plan"], plan.text
    refused = await client.post(f"{BASE}/live-my/explain", json={"query": "select 1; drop table t"},
                                headers=auth["viewer"])
    assert refused.status_code == 422
    holder.close()
    waiter.close()


async def test_explain_by_queryid_plans_the_stored_text_generically(client, auth, pg, clean_store):
    async with clean_store.raw() as conn:
        await conn.execute("insert into query_texts (instance_id, query_id, text) select id, 'q42', "
                           "'select v from t where id = $1' from instances where name = 'live-pg'")
    r = await client.post(f"{BASE}/live-pg/explain", json={"queryid": "q42"}, headers=auth["viewer"])
    assert r.status_code == 200, r.text
    assert r.json()["plan"][0]["Plan"]["Relation Name"] == "t"
    missing = await client.post(f"{BASE}/live-pg/explain", json={"queryid": "nope"}, headers=auth["viewer"])
    assert missing.status_code == 404


@pytest.mark.parametrize("query", ["update t set v = 3", "create table x (a int)", "select 1; drop table t"],
                         ids=["update", "ddl", "select then drop"])
async def test_mariadb_explain_refuses_anything_but_one_select(client, auth, my, query):
    r = await client.post(f"{BASE}/live-my/explain", json={"query": query}, headers=auth["admin"])
    assert r.status_code == 422 and r.json()["detail"].startswith("refused:"), r.text
    conn = await _my(my)
    try:
        async with conn.cursor() as c:
            await c.execute("select count(*) from t where v = 0")
            assert (await c.fetchone())[0] == 1
            await c.execute("show tables like 'x'")
            assert await c.fetchall() == ()
    finally:
        conn.close()


async def test_mariadb_explain_analyze_only_when_enabled_and_admin(client, auth, my, settings):
    body = {"query": "select count(*) from t", "analyze": True}
    off = await client.post(f"{BASE}/live-my/explain", json=body, headers=auth["admin"])
    assert off.status_code == 403 and "allow_analyze" in off.text
    settings.live.allow_analyze = True
    assert (await client.post(f"{BASE}/live-my/explain", json=body, headers=auth["operator"])).status_code == 403
    on = await client.post(f"{BASE}/live-my/explain", json=body, headers=auth["admin"])
    assert on.status_code == 200 and "r_loops" in on.text, on.text  # ANALYZE FORMAT=JSON: measured rows


async def test_the_statement_timeout_is_a_504_on_postgres(client, auth, pg, settings):
    settings.worker.statement_timeout_ms = 200
    settings.live.allow_analyze = True
    r = await client.post(f"{BASE}/live-pg/explain", json={"query": "select pg_sleep(2)", "analyze": True},
                          headers=auth["admin"])
    assert r.status_code == 504 and "statement timeout" in r.json()["detail"], r.text
