"""Volume, completeness, assertion and schema checks on real tables, each giving its finding.

Volume history is built from earlier simulated periods with the run time injected: a week of
hourly loads of about 1,000 rows, then a load of 10 %.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.quality.conftest import (
    define,
    findings_of,
    maria_exec,
    pg_exec,
    register,
    run_checks,
)

USUAL = (1000, 960, 1040, 1010, 990, 1030, 970)


async def _load(engine: str, db: str, at: datetime, rows: int) -> None:
    """`rows` rows loaded in the hour before `at` (UTC)."""
    stamp = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if engine == "postgres":
        await pg_exec(db, f"insert into loads (loaded_at) select timestamptz '{stamp}+00' - (g % 3500) * "
                          f"interval '1 second' - interval '1 second' from generate_series(1, {rows}) g")
    else:
        await maria_exec(db, f"insert into loads (loaded_at) select timestamp'{stamp}' - interval (seq % 3500) second "
                             f"- interval 1 second from seq_1_to_{rows}")


async def _open(store, check: str) -> list[dict]:
    return await findings_of(store, check, "open")


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_a_tenth_of_the_usual_load_is_a_volume_anomaly(qstore, settings, pg_db, maria_db, engine):
    if engine == "postgres":
        db = await pg_db("create table loads (id serial primary key, loaded_at timestamptz not null)")
    else:
        db = await maria_db("create table loads (id int auto_increment primary key, loaded_at datetime not null)")
    await register(qstore, "wh", engine, db)
    await define(qstore, {"name": "loads_volume", "kind": "volume", "tables": ["loads"],
                          "loaded_at_field": "loaded_at", "per": {"count": 1, "period": "hour"},
                          "labels": {"source": "erp"}})
    now = datetime.now(UTC).replace(microsecond=0)
    for days, rows in enumerate(USUAL, start=1):  # the same hour on each of the seven days before
        at = now - timedelta(days=days)
        await _load(engine, db, at, rows)
        [o] = (await run_checks(qstore, settings, now=at)).outcomes
        assert o.value == rows and o.state == "pass"
    assert await _open(qstore, "volume_anomaly") == []
    await _load(engine, db, now, 100)
    [o] = (await run_checks(qstore, settings, now=now)).outcomes
    assert (o.state, o.value) == ("warn", 100)
    [f] = await _open(qstore, "volume_anomaly")
    assert f["details"]["direction"] == "drop" and f["details"]["baseline_points"] == 7
    assert f["details"]["basis"] == "hour of week" or f["details"]["basis"] == "hour of day"
    assert 990 < f["details"]["mean"] < 1010 and f["details"]["source"] == "erp"
    async with qstore.raw() as conn:
        assert await conn.fetchval("select count(*) from samples where metric = 'quality_rows_per_period'") == 8


async def test_a_normal_load_and_the_absolute_floor(qstore, settings, pg_db):
    db = await pg_db("create table loads (id serial primary key, loaded_at timestamptz not null)")
    await register(qstore, "wh", "postgres", db)
    await define(qstore, {"name": "loads_volume", "kind": "volume", "tables": ["loads"],
                          "loaded_at_field": "loaded_at", "min_rows": 50})
    now = datetime.now(UTC).replace(microsecond=0)
    for days, rows in enumerate(USUAL[:4], start=1):
        await _load("postgres", db, now - timedelta(days=days), rows)
        await run_checks(qstore, settings, now=now - timedelta(days=days))
    await _load("postgres", db, now, 1005)
    [o] = (await run_checks(qstore, settings, now=now)).outcomes
    assert o.state == "pass"
    [o] = (await run_checks(qstore, settings, now=now + timedelta(hours=1))).outcomes
    assert (o.state, o.value) == ("error", 0)
    [f] = await _open(qstore, "volume_anomaly")
    assert f["severity"] == "critical" and f["details"]["direction"] == "below floor"


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_null_shares_give_completeness_low(qstore, settings, pg_db, maria_db, engine):
    ddl = "create table customers (id int primary key, email varchar(100), country varchar(2), phone varchar(20))"
    rows = ("insert into customers values (1, 'a@x', 'FR', null), (2, null, 'DE', null), (3, '', 'FR', '1'), "
            "(4, 'd@x', 'FR', null)")
    db = await (pg_db(f"{ddl}; {rows}") if engine == "postgres" else maria_db(ddl, rows))
    await register(qstore, "crm", engine, db)
    await define(qstore, {"name": "customers_complete", "kind": "completeness", "tables": ["customers"],
                          "columns": ["email", "country", "phone"], "max_null_share": 0.5})
    outcomes = (await run_checks(qstore, settings)).outcomes
    assert [o.state for o in outcomes] == ["warn"]
    [f] = await _open(qstore, "completeness_low")
    assert f["details"]["column"] == "phone" and f["details"]["null_share"] == 0.75
    assert "customers.phone" in f["object"]
    async with qstore.raw() as conn:
        shares = dict(await conn.fetch("select object, value from samples where metric = 'quality_null_share'"))
    # email: one NULL and one empty string of 4; country complete
    assert sorted(shares.values()) == [0.0, 0.5, 0.75]


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_an_assertion_returning_rows_fails_with_capped_evidence(qstore, settings, pg_db, maria_db, engine):
    statements = ["create table customers (id int primary key)",
                  "create table orders (id int primary key, customer_id int)",
                  "insert into customers values (1), (2)",
                  "insert into orders values (10, 1), (11, 7), (12, 8), (13, 9), (14, 2)"]
    db = await (pg_db("; ".join(statements)) if engine == "postgres" else maria_db(*statements))
    await register(qstore, "shop", engine, db)
    await define(qstore,
                 {"name": "orders_orphans", "kind": "assertion", "max_evidence_rows": 2,
                  "query": "select o.id, o.customer_id from orders o left join customers c on c.id = o.customer_id "
                           "where c.id is null order by o.id", "labels": {"pipeline": "orders_etl"}},
                 {"name": "customers_unique", "kind": "assertion",
                  "query": "select id, count(*) from customers group by id having count(*) > 1"})
    summary = await run_checks(qstore, settings)
    assert {o.check: o.state for o in summary.outcomes} == {"orders_orphans": "error", "customers_unique": "pass"}
    assert [o.check for o in summary.failures()] == ["orders_orphans"]
    [f] = await _open(qstore, "assertion_failed")
    assert f["severity"] == "critical" and f["details"]["violations"] == 3
    # Two of the three as evidence (MariaDB drops ORDER BY inside a derived table, so which two may vary).
    ids = [r["id"] for r in f["details"]["evidence"]]
    assert len(ids) == 2 and set(ids) <= {11, 12, 13}
    assert f["details"]["pipeline"] == "orders_etl"


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_a_column_dropped_between_runs_is_schema_drift(qstore, settings, pg_db, maria_db, engine):
    ddl = "create table dim_customer (id int primary key, name varchar(50), valid_from date, is_current int)"
    if engine == "postgres":
        db = await pg_db(ddl)
        run_ddl = pg_exec
    else:
        db = await maria_db(ddl)
        run_ddl = maria_exec
    await register(qstore, "dw", engine, db)
    await define(qstore, {"name": "dim_shape", "kind": "schema", "tables": ["dim_customer"]},
                 {"name": "dim_declared", "kind": "schema", "tables": ["dim_customer"],
                  "expected_columns": {"id": None, "name": "varchar(50)" if engine == "mariadb"
                                       else "character varying(50)", "valid_from": None, "is_current": None}})
    first = await run_checks(qstore, settings)
    assert [o.state for o in first.outcomes] == ["pass", "pass"]
    await run_ddl(db, "alter table dim_customer drop column valid_from")
    await run_checks(qstore, settings)
    drift = {f["object"]: f for f in await _open(qstore, "schema_drift")}
    assert len(drift) == 2
    for f in drift.values():
        assert (f["details"]["dropped"], f["details"]["added"]) == (["valid_from"], [])
    # The first-run baseline is kept: the drift stays open while the column is missing.
    await run_checks(qstore, settings)
    assert len(await _open(qstore, "schema_drift")) == 2


async def test_a_dropped_table_is_schema_drift_until_it_returns(qstore, settings, pg_db):
    db = await pg_db("create table dim_store (id int primary key, name text)")
    await register(qstore, "dw", "postgres", db)
    await define(qstore, {"name": "store_shape", "kind": "schema", "tables": ["public.dim_store"]})
    assert [o.state for o in (await run_checks(qstore, settings)).outcomes] == ["pass"]
    await pg_exec(db, "drop table dim_store")
    assert [o.state for o in (await run_checks(qstore, settings)).outcomes] == ["error"]
    [f] = await _open(qstore, "schema_drift")
    assert f["severity"] == "critical" and f["details"]["dropped"] == ["id", "name"] and f["details"]["table_gone"]
    await pg_exec(db, "create table dim_store (id int primary key, name text)")
    assert [o.state for o in (await run_checks(qstore, settings)).outcomes] == ["pass"]
    assert await _open(qstore, "schema_drift") == []
