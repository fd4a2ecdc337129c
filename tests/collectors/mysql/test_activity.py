"""MySQL activity: transforms on recorded processlist rows; real InnoDB lock queues on MariaDB (:3306)."""

from __future__ import annotations

import asyncio
import uuid

import aiomysql
import pytest

from collectors.engines.base import Target, connect
from collectors.mysql.activity import LOCK_WAITS_SQL, SPEC, transform
from collectors.common.blocking import tree_members
from collectors.common.versions import closest_lower
from collectors.runner import run_collector
from tests.collectors.spec_context import spec_context


def row(id, command="Query", time_s=1, trx_id=None, wait_s=None, user="app", db="shop"):
    return {"id": id, "db": db, "user": user, "host": "10.0.0.9:5000", "command": command, "time_s": time_s,
            "state": "Updating" if wait_s else "", "query": "update t set v = 1", "trx_id": trx_id,
            "trx_state": "LOCK WAIT" if wait_s else None, "trx_started": None, "trx_age_s": time_s if trx_id else None,
            "wait_s": wait_s}


def ctx(**thresholds):
    return spec_context(SPEC, instance="db1", engine="mariadb", server_version=101119, thresholds=thresholds)


CASES = [
    ("quiet", [row(1), row(2, command="Sleep", time_s=900)], [], set()),
    ("long query", [row(1, time_s=301)], [], {("long_running_query", "shop:1")}),
    ("the event scheduler is not a query", [row(1, time_s=9999, user="event_scheduler")], [], set()),
    ("asleep in a transaction", [row(1, command="Sleep", time_s=61, trx_id=77)], [],
     {("idle_in_transaction", "shop:1")}),
    ("blocked 40 s", [row(1, command="Sleep", time_s=5, trx_id=77), row(2, trx_id=78, wait_s=40)],
     [{"requesting_trx_id": 78, "blocking_trx_id": "77"}], {("blocking_chain", "shop:1")}),
]


@pytest.mark.parametrize("rows,waits,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transform(rows, waits, expected):
    assert {(f.check, f.object) for f in transform(rows, ctx(), waits).findings} == expected


@pytest.mark.parametrize("version,table", [(50744, "INNODB_LOCK_WAITS"), (80036, "data_lock_waits"),
                                           (101119, "INNODB_LOCK_WAITS")])
def test_lock_waits_table_by_flavour(version, table):
    assert table in closest_lower(LOCK_WAITS_SQL, version)


async def _session(db=None):
    return await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db=db, autocommit=True)


async def test_row_lock_with_two_waiters_gives_the_tree_on_mariadb():
    db = f"dbf_live_{uuid.uuid4().hex[:8]}"
    admin = await _session()
    async with admin.cursor() as c:
        await c.execute(f"create database {db}")
        await c.execute(f"create table {db}.t (id int primary key, v int) engine=innodb")
        await c.execute(f"insert into {db}.t values (1, 0)")
    holder, w1, w2 = await _session(db), await _session(db), await _session(db)
    try:
        async with holder.cursor() as c:
            await c.execute("begin")
            await c.execute("update t set v = 1 where id = 1")
        waits = [asyncio.create_task(_update(w)) for w in (w1, w2)]
        await asyncio.sleep(1.5)
        conn = await connect(Target("db1", "mariadb", "127.0.0.1", 3306, user="root"))
        try:
            result = await run_collector(SPEC, conn, ctx(blocking_chain_s=1))
        finally:
            await conn.close()
        await holder.rollback()
        await asyncio.gather(*waits)
    finally:
        for s in (holder, w1, w2):
            s.close()
        async with admin.cursor() as c:
            await c.execute(f"drop database {db}")
        admin.close()
    [f] = [f for f in result.findings if f.check == "blocking_chain" and f.object == f"{db}:{holder.thread_id()}"]
    # InnoDB may queue the second waiter behind the first rather than the holder: both are in the tree.
    blocked = {n["session_id"] for n in tree_members(f.details["tree"])}
    assert blocked == {w1.thread_id(), w2.thread_id()}


async def _update(conn):
    async with conn.cursor() as c:
        await c.execute("update t set v = 2 where id = 1")


async def test_idle_in_transaction_session_gives_its_finding_on_mariadb():
    db = f"dbf_live_{uuid.uuid4().hex[:8]}"
    admin = await _session()
    async with admin.cursor() as c:
        await c.execute(f"create database {db}")
        await c.execute(f"create table {db}.t (id int primary key) engine=innodb")
    idle = await _session(db)
    try:
        async with idle.cursor() as c:
            await c.execute("begin")
            await c.execute("insert into t values (1)")  # an InnoDB transaction exists once it writes
        await asyncio.sleep(2.1)
        conn = await connect(Target("db1", "mariadb", "127.0.0.1", 3306, user="root"))
        try:
            result = await run_collector(SPEC, conn, ctx(idle_in_transaction_s=2))
        finally:
            await conn.close()
    finally:
        idle.close()
        async with admin.cursor() as c:
            await c.execute(f"drop database {db}")
        admin.close()
    assert ("idle_in_transaction", f"{db}:{idle.thread_id()}") in {(f.check, f.object) for f in result.findings}
