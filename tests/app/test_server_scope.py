"""One problem has one home: server-level checks run once per server, and each MySQL entry reports
only the schemas it names (or, naming none, the schemas no other entry names). Real MariaDB and
PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.settings import Settings
from app.sweep import Sweeper
from tests.collectors.mysql.servers import MARIADBD, start_mariadb, stop_mariadb

pytestmark = pytest.mark.slow
# Any connection count is "near the limit": every entry on the server would report it if it could.
LOW_LIMIT = {"health": {"thresholds": {"connections_warning_pct": 0, "connections_critical_pct": 101}}}


@pytest.fixture(scope="module")
def mariadb() -> Iterator:
    if not os.path.exists(MARIADBD):
        pytest.skip("mariadbd is not installed")
    server = start_mariadb("scope", 51)
    server.execute(
        "CREATE DATABASE shop", "CREATE DATABASE clean", "CREATE DATABASE other",
        "CREATE TABLE shop.orders (id int, customer int, KEY by_customer (customer), KEY by_customer_2 (customer))",
        "CREATE TABLE clean.accounts (id int PRIMARY KEY, region int, KEY by_region (region))",
        "CREATE TABLE other.audit (at datetime, what text)")
    yield server
    stop_mariadb(server)


async def register(store, *items: InstanceIn) -> None:
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, list(items), actor="test")


async def live(store) -> set[tuple[str, str, str]]:
    async with store.raw() as conn:
        rows = await conn.fetch("select i.name, f.check, f.object from findings f join instances i on i.id = f.instance_id "
                                "where f.state <> 'resolved'")
    return {(r["name"], r["check"], r["object"]) for r in rows}


async def sweep(store, collectors: list[str]) -> None:
    sweeper = Sweeper(store, Settings(worker={"backoff_base_s": 0}))
    try:
        await sweeper.sweep(collectors)
    finally:
        await sweeper.close()


async def test_two_mariadb_entries_on_one_server_report_only_their_own_schemas(clean_store, mariadb):
    def entry(name: str, dbname: str) -> InstanceIn:
        return InstanceIn(name=name, engine="mariadb", host="127.0.0.1", port=mariadb.port, dbname=dbname,
                          user="root", overrides=LOW_LIMIT)

    await register(clean_store, entry("my-shop", "shop"), entry("my-clean", "clean"), entry("my-rest", ""))
    await sweep(clean_store, ["index_advice", "health"])
    assert await live(clean_store) == {
        ("my-shop", "duplicate_index", "shop.orders.by_customer_2"),
        ("my-shop", "table_without_primary_key", "shop.orders"),
        ("my-rest", "table_without_primary_key", "other.audit"),  # names none: what no other entry names
        ("my-shop", "connections_near_limit", "server"),  # the server's own problem, once, on its first entry
    }


async def test_server_checks_run_once_per_postgresql_server(clean_store, target_db):
    dbs = [await target_db() for _ in range(3)]
    await register(clean_store, *[
        InstanceIn(name=f"pg-{i}", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres")
        for i, db in enumerate(dbs)])
    await sweep(clean_store, ["health", "partitions"])
    async with clean_store.raw() as conn:
        runs = {(r["name"], r["collector"]) for r in await conn.fetch(
            "select i.name, r.collector from collector_runs r join instances i on i.id = r.instance_id "
            "where r.status = 'ok' and r.duration_ms > 0")}
    assert {c for n, c in runs if c == "health"} == {"health"}
    assert [n for n, c in runs if c == "health"] == ["pg-0"]
    assert {n for n, c in runs if c == "partitions"} == {"pg-0", "pg-1", "pg-2"}


async def test_server_findings_left_on_other_entries_are_resolved_once(clean_store, target_db):
    """Before servers had one home, each entry carried its own copy of a server finding."""
    dbs = [await target_db() for _ in range(2)]
    await register(clean_store, *[
        InstanceIn(name=f"pg-{i}", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres")
        for i, db in enumerate(dbs)])
    async with clean_store.raw() as conn:
        await conn.execute(
            "insert into findings (fingerprint, instance_id, collector, \"check\", object, severity, state, title, "
            "details, recommendation, first_seen, last_seen, opened_at) select 'dup', id, 'health', "
            "'connections_near_limit', 'server', 'warning', 'open', 't', '{}', '', now(), now(), now() "
            "from instances where name = 'pg-1'")
    await sweep(clean_store, ["health"])
    assert ("pg-1", "connections_near_limit", "server") not in await live(clean_store)
