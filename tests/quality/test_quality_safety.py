"""Checks run in the collectors' session: read-only (a function that writes is refused by the
server even when sqlglot lets its text through), under statement_timeout; the insert-counter
volume method measures rows per period from pg_stat_user_tables deltas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.settings import Settings
from tests.quality.conftest import define, pg_exec, register, run_checks


async def test_read_only_session_and_statement_timeout(qstore, pg_db):
    db = await pg_db("create sequence s; create table t (id int)")
    await register(qstore, "db", "postgres", db)
    await define(qstore, {"name": "writes", "kind": "assertion", "query": "select nextval('s')"},
                 {"name": "slow", "kind": "assertion", "query": "select 1 from pg_sleep(2)"},
                 {"name": "fine", "kind": "assertion", "query": "select id from t"},
                 {"name": "own_timeout", "kind": "assertion", "query": "select 1 from pg_sleep(0.2)", "timeout_s": 0.05})
    settings = Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2, "statement_timeout_ms": 300})
    outcomes = {o.check: o for o in (await run_checks(qstore, settings)).outcomes}
    assert outcomes["writes"].state == "failed" and "read-only transaction" in outcomes["writes"].title
    assert outcomes["slow"].state == "failed" and "statement timeout" in outcomes["slow"].title
    assert outcomes["fine"].state == "pass"
    assert outcomes["own_timeout"].state == "failed" and "timed out after 0.05s" in outcomes["own_timeout"].title
    async with qstore.raw() as conn:
        assert await conn.fetchval("select count(*) from findings") == 0
        states = dict(await conn.fetch("select object, state from quality_check_results"))
    assert states == {"writes": "failed", "slow": "failed", "fine": "pass", "own_timeout": "failed"}


async def test_insert_counter_volume(qstore, settings, pg_db):
    db = await pg_db("create table loads (id int)")
    await register(qstore, "wh", "postgres", db)
    await define(qstore, {"name": "loads_inserts", "kind": "volume", "method": "inserts", "tables": ["loads"]})
    now = datetime.now(UTC)
    [first] = (await run_checks(qstore, settings, now=now - timedelta(hours=1))).outcomes
    assert (first.state, first.value) == ("pass", None)  # the first reading is the counter's baseline
    await pg_exec(db, "insert into loads select g from generate_series(1, 500) g")
    [second] = (await run_checks(qstore, settings, now=now)).outcomes
    assert second.state == "pass" and second.value == 500.0
