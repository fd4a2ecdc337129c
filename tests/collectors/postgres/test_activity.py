"""Activity: transforms on recorded pg_stat_activity rows; real lock queues and idle transactions on PG 15."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from collectors.common.blocking import lock_trees, tree_members
from collectors.engines.base import Target, connect
from collectors.postgres.activity import SPEC, horizon_transform, transform
from collectors.runner import run_collector
from tests.collectors.spec_context import spec_context


def row(pid, state="active", query_age=1.0, state_age=1.0, blocked_by=(), wait_s=None, backend="client backend",
        xmin_age=None, db="app"):
    return {"pid": pid, "datname": db, "usename": "u", "application_name": "a", "client_addr": "10.0.0.9",
            "state": state, "wait_event_type": "Lock" if blocked_by else None,
            "wait_event": "transactionid" if blocked_by else None, "backend_type": backend, "query": "select 1",
            "backend_start": None, "query_start": None, "xact_start": None, "xact_age_s": query_age,
            "query_age_s": query_age, "state_age_s": state_age, "xmin_age": xmin_age,
            "blocked_by": list(blocked_by), "wait_s": wait_s}


def ctx(**thresholds):
    return spec_context(SPEC, instance="pg-a", engine="postgres", thresholds=thresholds)


def checks(result):
    return {(f.check, f.object) for f in result.findings}


CASES = [
    ("quiet", [row(1), row(2, state="idle")], set()),
    ("long query", [row(1, query_age=301)], {("long_running_query", "app:1")}),
    ("long but a walsender", [row(1, query_age=9999, backend="walsender")], set()),
    ("idle in transaction", [row(1, state="idle in transaction", state_age=61)], {("idle_in_transaction", "app:1")}),
    ("idle in transaction, not yet", [row(1, state="idle in transaction", state_age=59)], set()),
    ("blocked 31 s", [row(1, state="idle in transaction", state_age=5), row(2, blocked_by=[1], wait_s=31)],
     {("blocking_chain", "app:1")}),
    ("blocked 5 s", [row(1), row(2, blocked_by=[1], wait_s=5)], set()),
]


@pytest.mark.parametrize("rows,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transform(rows, expected):
    assert checks(transform(rows, ctx())) == expected


def test_lock_tree_nests_a_queue_and_survives_a_cycle():
    [tree] = lock_trees([{"session_id": 1, "blocked_by": []}, {"session_id": 2, "blocked_by": [1]},
                         {"session_id": 3, "blocked_by": [2]}])
    assert tree["session_id"] == 1 and tree["blocked"][0]["session_id"] == 2
    assert tree["blocked"][0]["blocked"][0]["session_id"] == 3
    [cycle] = lock_trees([{"session_id": 5, "blocked_by": [6]}, {"session_id": 6, "blocked_by": [5]}])
    assert cycle["session_id"] == 5 and cycle["blocked"][0]["session_id"] == 6


def test_wait_samples_count_active_client_sessions():
    result = transform([row(1), row(2), row(3, blocked_by=[1], wait_s=1), row(4, state="idle")], ctx())
    assert {s.object: s.value for s in result.samples} == {"CPU:CPU": 2.0, "Lock:transactionid": 1.0}


def test_horizon_names_the_oldest_holder():
    others = [{"holder": "replication_slot", "name": "s1", "xmin_age": 50_000_000, "database": ""}]
    result = horizon_transform([row(1, xmin_age=20_000_000)], others, ctx())
    [f] = result.findings
    assert f.check == "xmin_horizon_held" and f.details["oldest"]["holder"] == "replication_slot"
    assert horizon_transform([row(1, xmin_age=10)], [], ctx()).findings == []


async def _session(dbname, host="127.0.0.1", port=5432):
    return await asyncpg.connect(host=host, port=port, user="postgres", database=dbname)


async def _lock_queue(dbname, host="127.0.0.1", port=5432):
    """A session holding a row lock and two queued behind it; the collector's blocking_chain for them."""
    setup = await _session(dbname, host, port)
    await setup.execute("drop table if exists t; create table t (id int primary key, v int); insert into t values (1, 0)")
    holder, w1, w2 = [await _session(dbname, host, port) for _ in range(3)]
    tx = holder.transaction()
    await tx.start()
    await holder.execute("update t set v = 1 where id = 1")
    waits = [asyncio.create_task(w.execute("update t set v = 2 where id = 1")) for w in (w1, w2)]
    await asyncio.sleep(1.5)
    conn = await connect(Target("node", "postgres", host, port, dbname, "postgres"))
    try:
        result = await run_collector(SPEC, conn, ctx(blocking_chain_s=1))
    finally:
        await conn.close()
        await tx.rollback()
        await asyncio.gather(*waits)
        for c in (holder, w1, w2, setup):
            await c.close()
    [f] = [f for f in result.findings if f.check == "blocking_chain" and f.details["tree"]["database"] == dbname]
    tree = f.details["tree"]
    assert tree["session_id"] == holder.get_server_pid()
    assert {n["session_id"] for n in tree_members(tree)} == {w1.get_server_pid(), w2.get_server_pid()}
    assert f.details["blocked_sessions"] == 2


async def test_row_lock_with_two_waiters_gives_the_tree_and_blocking_chain(pgp_db):
    await _lock_queue(pgp_db)


async def test_row_lock_queue_on_postgres_18(pg18_cluster):
    """18 has pg_locks.waitstart (the 14+ SQL) like 15; this checks the same SQL on the newest server."""
    await _lock_queue("postgres", pg18_cluster.host, pg18_cluster.port)


async def _idle_in_transaction(dbname, host="127.0.0.1", port=5432):
    idle = await _session(dbname, host, port)
    await idle.execute("begin; select 1")
    await asyncio.sleep(1.2)
    conn = await connect(Target("node", "postgres", host, port, dbname, "postgres"))
    try:
        result = await run_collector(SPEC, conn, ctx(idle_in_transaction_s=1))
    finally:
        await conn.close()
        await idle.close()
    assert ("idle_in_transaction", f"{dbname}:{idle.get_server_pid()}") in checks(result)


async def test_idle_in_transaction_session_gives_its_finding(pgp_db):
    await _idle_in_transaction(pgp_db)


async def test_idle_in_transaction_on_postgres_18(pg18_cluster):
    await _idle_in_transaction("postgres", pg18_cluster.host, pg18_cluster.port)
