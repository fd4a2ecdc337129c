"""Freshness on real tables: 20 minutes behind a 15-minute SLA is breached, 5 minutes is not
(PostgreSQL and MariaDB), warning at warn_after, critical at error_after, lag kept as samples,
the finding routes by its pipeline label, and resolves once a fresh row lands."""

from __future__ import annotations

import pytest

from app.alerting.config import load_config
from app.alerting.routing import RoutingTree
from app.quality.runner import QualityRunner
from tests.quality.conftest import define, findings_of, pg_exec, register

PG_TABLES = """
create table public.orders (id int primary key, loaded_at timestamptz not null);
create index on public.orders (loaded_at);
insert into orders values (1, now() - interval '20 minutes');
create table public.payments (id int primary key, loaded_at timestamp not null);
insert into payments values (1, localtimestamp - interval '5 minutes');
"""


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_twenty_minutes_behind_a_fifteen_minute_sla_is_breached(qstore, settings, pg_db, maria_db, engine):
    if engine == "postgres":
        db = await pg_db(PG_TABLES)
        tables = ["public.orders", "public.payments"]
    else:
        db = await maria_db(
            "create table orders (id int primary key, loaded_at datetime not null, key (loaded_at))",
            "insert into orders values (1, now() - interval 20 minute)",
            "create table payments (id int primary key, loaded_at timestamp not null)",
            "insert into payments values (1, now() - interval 5 minute)")
        tables = [f"{db}.orders", f"{db}.payments"]
    await register(qstore, "shop", engine, db, {"env": "prod"})
    await define(qstore, {"name": "shop_fresh", "kind": "freshness", "tables": tables, "loaded_at_field": "loaded_at",
                          "labels": {"source": "shop", "pipeline": "orders_etl"}})
    runner = QualityRunner(qstore, settings)
    try:
        summary = await runner.run()
    finally:
        await runner.close()
    states = {o.object: o.state for o in summary.outcomes}
    assert states == {tables[0]: "error", tables[1]: "pass"}
    lag = {o.object: o.value for o in summary.outcomes}
    assert 19 * 60 < lag[tables[0]] < 22 * 60 and 4 * 60 < lag[tables[1]] < 7 * 60
    [f] = await findings_of(qstore, "freshness_sla_breached")
    assert (f["object"], f["severity"], f["state"]) == (f"{tables[0]} [shop_fresh]", "critical", "open")
    assert (f["details"]["source"], f["details"]["pipeline"]) == ("shop", "orders_etl")
    assert f["details"]["sql"].startswith("/* dbfleet:quality:freshness */ select max(")
    assert "orders" in f["details"]["sql"]
    async with qstore.raw() as conn:
        labels = await conn.fetchval("select labels from outbox where status = 'firing'")
        lags = await conn.fetch("select object, value from samples where metric = 'quality_freshness_lag_seconds'")
    assert (labels["source"], labels["pipeline"], labels["env"]) == ("shop", "orders_etl", "prod")
    # A route on the pipeline's labels reaches the team that owns it.
    tree = RoutingTree(load_config({
        "route": {"receiver": "dba", "routes": [{"matchers": ["pipeline=orders_etl"], "receiver": "orders-team"}]},
        "receivers": [{"type": "webhook", "name": n, "url": "http://127.0.0.1:9/"} for n in ("dba", "orders-team")]}))
    assert tree.receivers(labels) == ["orders-team"]
    assert {r["object"] for r in lags} == {f"{t} [shop_fresh]" for t in tables}
    assert summary.failures() and summary.failures()[0].object == tables[0]


async def test_warning_at_warn_after_critical_at_error_after_and_resolved_by_a_new_row(qstore, settings, pg_db):
    db = await pg_db(PG_TABLES)
    await register(qstore, "shop", "postgres", db)
    await define(qstore, {"name": "orders_fresh", "kind": "freshness", "tables": ["orders"],
                          "loaded_at_field": "loaded_at", "warn_after": {"count": 10, "period": "minute"},
                          "error_after": {"count": 1, "period": "hour"}})
    runner = QualityRunner(qstore, settings)
    try:
        [o] = (await runner.run()).outcomes
        assert o.state == "warn"
        [f] = await findings_of(qstore, "freshness_sla_breached")
        assert f["severity"] == "warning"
        await pg_exec(db, "insert into orders values (2, now())")
        [o] = (await runner.run()).outcomes
        assert o.state == "pass" and o.value < 60
    finally:
        await runner.close()
    [f] = await findings_of(qstore, "freshness_sla_breached")
    assert f["state"] == "resolved"


async def test_loaded_at_query_and_an_empty_table(qstore, settings, pg_db):
    db = await pg_db("create table events (id int, at timestamptz); create table audit (id int)")
    await register(qstore, "ev", "postgres", db)
    await define(qstore,
                 {"name": "ev_query", "kind": "freshness", "loaded_at_query": "select max(at) from events",
                  "error_after": {"count": 1, "period": "day"}},
                 {"name": "ev_empty", "kind": "freshness", "tables": ["events"], "loaded_at_field": "at"})
    runner = QualityRunner(qstore, settings)
    try:
        outcomes = {o.check: o for o in (await runner.run()).outcomes}
    finally:
        await runner.close()
    # No row at all: nothing shows the pipeline ran, which is a breach, not a pass.
    assert outcomes["ev_query"].state == outcomes["ev_empty"].state == "error"
