"""Definition-time refusal: a freshness check whose max(loaded_at_field) would scan a large table
without an index is refused with the CREATE INDEX to add (EXPLAIN on PostgreSQL and MariaDB);
allow_scan: true overrides it, and once the index exists the same check is accepted."""

from __future__ import annotations

import pytest

from app.quality.definitions import parse_definitions
from app.quality.refusals import define_checks
from tests.quality.conftest import maria_exec, pg_exec, register

ROWS = 150_000


def _check(table: str, **extra) -> list:
    checks, problems = parse_definitions([{"name": "events_fresh", "kind": "freshness", "tables": [table],
                                           "loaded_at_field": "loaded_at", **extra}])
    assert problems == []
    return checks


async def _stored(store) -> list[str]:
    async with store.raw() as conn:
        return [r[0] for r in await conn.fetch("select name from quality_checks")]


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_an_unindexed_freshness_check_on_a_large_table_is_refused(qstore, settings, pg_db, maria_db, engine):
    if engine == "postgres":
        db = await pg_db(f"create table events (id int primary key, loaded_at timestamptz, body text);"
                         f"insert into events select g, now() - g * interval '1 second', 'x' "
                         f"from generate_series(1, {ROWS}) g; analyze events;"
                         f"create table small (id int, loaded_at timestamptz); insert into small values (1, now())")
        table, index = "public.events", 'CREATE INDEX CONCURRENTLY "ix_events_loaded_at" ON "public"."events" ("loaded_at");'
    else:
        db = await maria_db("create table events (id int primary key, loaded_at datetime, body varchar(10))",
                            f"insert into events select seq, now() - interval seq second, 'x' from seq_1_to_{ROWS}",
                            "analyze table events",
                            "create table small (id int, loaded_at datetime)", "insert into small values (1, now())")
        table = f"{db}.events"
        index = f"CREATE INDEX `ix_events_loaded_at` ON `{db}`.`events` (`loaded_at`) ALGORITHM=INPLACE LOCK=NONE;"
    await register(qstore, "events-db", engine, db)

    refused = await define_checks(qstore, settings, _check(table), "api", "test")
    assert refused.saved == [] and len(refused.refused) == 1
    assert index in refused.refused[0] and "allow_scan" in refused.refused[0]
    assert refused.refused[0].startswith("events-db: check events_fresh")
    assert await _stored(qstore) == []

    # A small table is cheap to scan: accepted as it is.
    small = await define_checks(qstore, settings, _check("small" if engine == "postgres" else f"{db}.small"), "api", "t")
    assert small.refused == [] and small.saved == ["events_fresh"]

    allowed = await define_checks(qstore, settings, _check(table, allow_scan=True), "api", "test")
    assert allowed.refused == [] and allowed.saved == ["events_fresh"]

    if engine == "postgres":
        await pg_exec(db, "create index on events (loaded_at)")
    else:
        await maria_exec(db, "create index ix_loaded on events (loaded_at)")
    indexed = await define_checks(qstore, settings, _check(table), "api", "test")
    assert indexed.refused == [] and indexed.saved == ["events_fresh"]


async def test_an_unreachable_instance_is_not_verified_and_the_check_is_kept(qstore, settings):
    async with qstore.raw() as conn:
        await conn.execute("insert into instances (name, engine, host, port, dbname, \"user\", tls_mode) "
                           "values ('gone', 'postgres', '127.0.0.1', 1, 'x', 'postgres', 'disable')")
    out = await define_checks(qstore, settings, _check("events"), "api", "test")
    assert out.saved == ["events_fresh"] and out.unverified and out.unverified[0].startswith("gone: ")
