"""Partition maintenance through the API: a dry-run plan for viewers, an audited apply for admins,
on a real PostgreSQL database and a real MariaDB schema."""

from __future__ import annotations

import uuid
from datetime import date

import aiomysql
import pytest

from app.settings import Settings

BASE = "/api/v1/instances"
MONTH = date.today().replace(day=1)


def _months(offset: int) -> date:
    y, m = divmod(MONTH.month - 1 + offset, 12)
    return date(MONTH.year + y, m + 1, 1)


PG_SCHEMA = f"""
create table events (id bigint not null, at timestamptz not null) partition by range (at);
create table events_old partition of events for values from ('{_months(-1)}') to ('{_months(0)}');
create table events_now partition of events for values from ('{_months(0)}') to ('{_months(1)}');
create table plain (id int);
"""


@pytest.fixture
def settings() -> Settings:
    return Settings(worker={"backoff_base_s": 0}, partitions={"policies": [
        {"instances": ["part-*"], "table": "public.events", "interval": "1 month", "premake": 2},
        {"instances": ["part-my"], "table": "dbf_*.sales", "premake": 2},
    ]})


async def _register(client, auth, name: str, **fields) -> None:
    r = await client.post(BASE, json={"name": name, "user": "postgres", **fields}, headers=auth["admin"])
    assert r.status_code == 201, r.text


async def _audit(store) -> list[tuple[str, str]]:
    async with store.raw() as conn:
        return [tuple(r) for r in await conn.fetch(
            "select outcome, details->>'sql' from audit_log where action = 'partitions.apply' order by id")]


async def test_postgres_plan_is_a_dry_run_and_apply_is_audited_and_idempotent(client, auth, clean_store, target_db):
    db = await target_db(PG_SCHEMA)
    await _register(client, auth, "part-pg", engine="postgres", host="127.0.0.1", port=5432, dbname=db)

    plan = (await client.get(f"{BASE}/part-pg/partitions/plan", headers=auth["viewer"])).json()
    assert plan["dry_run"] is True
    creates = [s for s in plan["statements"] if s["action"] == "create_partition"]
    assert {s["applies"] for s in plan["statements"]} == {True}
    assert len(creates) == 2 and all(s["sql"].startswith("CREATE TABLE") for s in creates)
    again = (await client.get(f"{BASE}/part-pg/partitions/plan", headers=auth["viewer"])).json()
    assert again["statements"] == plan["statements"], "planning changed nothing"

    denied = await client.post(f"{BASE}/part-pg/partitions:apply", headers=auth["operator"])
    assert denied.status_code == 403
    applied = (await client.post(f"{BASE}/part-pg/partitions:apply", headers=auth["admin"])).json()
    assert [o["status"] for o in applied["outcomes"]] == ["ok", "ok"]
    assert [sql for _, sql in await _audit(clean_store)] == [s["sql"] for s in creates]

    second = (await client.post(f"{BASE}/part-pg/partitions:apply", headers=auth["admin"])).json()
    assert second["outcomes"] == []
    assert (await client.get(f"{BASE}/part-pg/partitions/plan", headers=auth["viewer"])).json()["statements"] == []


@pytest.mark.parametrize("table", ["public.plain", "public.nope", "events; drop table events"])
async def test_a_table_that_is_not_partitioned_is_refused(client, auth, clean_store, target_db, table):
    db = await target_db(PG_SCHEMA)
    await _register(client, auth, "part-pg", engine="postgres", host="127.0.0.1", port=5432, dbname=db)
    r = await client.post(f"{BASE}/part-pg/partitions:apply", json={"table": table}, headers=auth["admin"])
    # a name that is not an identifier is refused at the door (body.table); the others by the planner
    assert r.status_code == 422 and ("partition" in r.json()["detail"] or "body.table" in r.json()["detail"])
    assert await _audit(clean_store) == []


@pytest.fixture
async def mariadb_schema():
    name = f"dbf_t_my_{uuid.uuid4().hex[:8]}"
    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"create database `{name}`")
            await cur.execute(
                f"create table `{name}`.sales (id int not null, d date not null, primary key (id, d)) "
                f"partition by range columns (d) (partition p_old values less than ('{_months(0)}'), "
                f"partition p_now values less than ('{_months(1)}'), partition pmax values less than (maxvalue))")
        yield name
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"drop database if exists `{name}`")
        conn.close()


async def test_mysql_plan_and_apply(client, auth, clean_store, mariadb_schema):
    await _register(client, auth, "part-my", engine="mariadb", host="127.0.0.1", port=3306, dbname=mariadb_schema)
    await client.patch(f"{BASE}/part-my", json={"user": "root"}, headers=auth["admin"])
    plan = (await client.get(f"{BASE}/part-my/partitions/plan", headers=auth["viewer"])).json()
    assert plan["statements"] and all("REORGANIZE PARTITION" in s["sql"] or "ADD PARTITION" in s["sql"]
                                      for s in plan["statements"])
    applied = (await client.post(f"{BASE}/part-my/partitions:apply", headers=auth["admin"])).json()
    assert {o["status"] for o in applied["outcomes"]} == {"ok"}
    assert len(await _audit(clean_store)) == len(applied["outcomes"])
    assert (await client.get(f"{BASE}/part-my/partitions/plan", headers=auth["viewer"])).json()["statements"] == []


async def test_apply_without_a_configured_policy_plans_but_changes_nothing(client, auth, clean_store, target_db,
                                                                         partitions_of):
    db = await target_db(PG_SCHEMA, prefix="dbf_i12")
    # No policy's `instances` glob matches this name, so every table falls back to the defaults.
    await _register(client, auth, "other-pg", engine="postgres", host="127.0.0.1", port=5432, dbname=db)
    plan = (await client.get(f"{BASE}/other-pg/partitions/plan", headers=auth["viewer"])).json()
    assert plan["statements"] and {s["applies"] for s in plan["statements"]} == {False}, "planned, marked"
    before = await partitions_of(db)
    r = await client.post(f"{BASE}/other-pg/partitions:apply", headers=auth["admin"])
    assert r.status_code == 200, r.text
    outcomes = r.json()["outcomes"]
    assert [(o["status"], o["message"]) for o in outcomes] == \
        [("planned_only", "no policy configured: planned only")] * len(plan["statements"])
    assert await partitions_of(db) == before
    assert await _audit(clean_store) == []
