"""Collector sessions do no harm: read-only, time-limited, and visible as `dbfleet`.

Checked on a live session while a collector is running on it: its own settings through the
collector's connection, its application_name as pg_stat_activity shows it to another session.
"""

from __future__ import annotations

import asyncpg
import pytest

from collectors.engines.base import SessionLimits, Target
from collectors.engines.pool import ConnectionPool
from collectors.runner import run_collector
from collectors.spec import CollectorSpec, Context, Result

DSN = dict(host="127.0.0.1", port=5432, user="postgres", database="postgres")
TARGET = Target(name="session-safety", engine="postgres", host="127.0.0.1", port=5432, dbname="postgres",
                user="postgres", tls_mode="disable")
LIMITS = SessionLimits(connect_timeout_s=3, statement_timeout_ms=4321, lock_timeout_ms=321)


async def _observe(conn, ctx: Context) -> Result:
    """A collector whose run looks at its own session, and at it from another connection."""
    own = (await conn.fetch(
        "select current_setting('default_transaction_read_only') as ro, "
        "current_setting('transaction_read_only') as tx_ro, "
        "current_setting('statement_timeout') as st, current_setting('lock_timeout') as lt, "
        "current_setting('application_name') as app, pg_backend_pid() as pid"))[0]
    other = await asyncpg.connect(**DSN)
    try:
        seen = await other.fetchrow(
            "select application_name, usename, datname from pg_stat_activity where pid = $1", own["pid"])
    finally:
        await other.close()
    return Result(state={"own": own, "seen": dict(seen) if seen else None})


SPEC = CollectorSpec(name="session_probe", engine="postgres", description="test probe", run=_observe)


@pytest.fixture
async def pool():
    p = ConnectionPool(LIMITS)
    yield p
    await p.close()


async def test_collector_session_is_read_only_time_limited_and_named(pool):
    async with pool.session(TARGET) as conn:
        result = await run_collector(SPEC, conn, Context(instance=TARGET.name, engine="postgres"))
    own, seen = result.state["own"], result.state["seen"]
    assert own["ro"] == "on"
    assert own["tx_ro"] == "on"
    # PostgreSQL shows milliseconds below 1 s as "321ms" and whole seconds otherwise as "4321ms".
    assert own["st"] == "4321ms"
    assert own["lt"] == "321ms"
    assert own["app"] == "dbfleet"
    assert seen is not None, "the collector's backend is not in pg_stat_activity"
    assert seen["application_name"] == "dbfleet"
    assert seen["datname"] == "postgres"


async def test_collector_session_refuses_writes(pool):
    async with pool.session(TARGET) as conn:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.fetch("create table dbf_bench_must_not_exist (id int)")
        # The held session survives the refused statement and is still read-only.
        rows = await conn.fetch("select current_setting('default_transaction_read_only') as ro")
    assert rows[0]["ro"] == "on"


async def test_statement_timeout_stops_a_long_query(pool):
    async with pool.session(TARGET) as conn:
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.fetch("select pg_sleep(10)")


async def test_sweeper_sessions_carry_the_configured_limits(clean_store):
    """The worker's settings reach the held sessions a real sweep opens."""
    from app.inventory.schemas import InstanceIn
    from app.inventory.store import upsert_instances
    from app.settings import Settings
    from app.sweep import Sweeper

    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [InstanceIn(name="safety-1", engine="postgres", host="127.0.0.1", port=5432,
                                                    dbname="postgres", user="postgres", tls_mode="disable")],
                               actor="test")
    settings = Settings(worker={"statement_timeout_ms": 7000, "lock_timeout_ms": 250, "backoff_base_s": 0})
    sweeper = Sweeper(clean_store, settings)
    try:
        summary = await sweeper.sweep(["health"])
        assert summary.ok == 1, summary.errors
        held = sweeper.pool._held["safety-1"].conn
        own = (await held.fetch("select current_setting('default_transaction_read_only') as ro, "
                                "current_setting('statement_timeout') as st, "
                                "current_setting('lock_timeout') as lt, pg_backend_pid() as pid"))[0]
        other = await asyncpg.connect(**DSN)
        try:
            app_name = await other.fetchval("select application_name from pg_stat_activity where pid = $1", own["pid"])
        finally:
            await other.close()
    finally:
        await sweeper.close()
    assert (own["ro"], own["st"], own["lt"], app_name) == ("on", "7s", "250ms", "dbfleet")
