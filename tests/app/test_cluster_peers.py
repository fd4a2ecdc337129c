"""Cluster awareness: an index counts as unused only if no peer in its `cluster` tag scans it."""

from __future__ import annotations

import json

import asyncpg
import pytest

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.settings import Settings
from app.sweep import Selector, Sweeper
from tests.conftest import pg_url

SCHEMA = """
create table accounts (id int primary key, region text not null);
create index accounts_region_idx on accounts (region);
create index "Accounts By Region" on accounts (region, id);
insert into accounts select g, 'r' || (g % 50) from generate_series(1, 5000) g;
analyze accounts;
"""

SETTINGS = Settings(
    worker={"backoff_base_s": 0},
    collectors={"index_advice": {"thresholds": {"unused_index_min_bytes": 0, "unused_index_min_window_days": 0,
                                                 "fk_min_table_bytes": 0}}})


async def _use_index(db: str, index: str = "accounts_region_idx") -> None:
    conn = await asyncpg.connect(pg_url(db))
    try:
        await conn.execute("set enable_seqscan = off; set enable_bitmapscan = off")
        drop = [n for n in ("accounts_region_idx", "Accounts By Region") if n != index]
        await conn.execute("begin; " + "".join(f'drop index "{n}"; ' for n in drop))  # so the planner picks it
        for i in range(5):
            await conn.fetch("select id from accounts where region = $1", f"r{i}")
        await conn.execute("rollback")
    finally:
        await conn.close()


async def _unused(store, name: str) -> dict[str, dict]:
    async with store.raw() as conn:
        rows = await conn.fetch(
            "select f.object, f.details from findings f join instances i on i.id = f.instance_id "
            "where i.name = $1 and f.check = 'unused_index' and f.state <> 'resolved'", name)
    return {r["object"]: json.loads(r["details"]) if isinstance(r["details"], str) else r["details"] for r in rows}


async def _sweep_twice(store) -> None:
    sweeper = Sweeper(store, SETTINGS)
    try:
        # The first sweep records each instance's index scans; the second can compare with peers.
        for _ in range(2):
            await sweeper.sweep(["index_advice"], Selector())
    finally:
        await sweeper.close()


@pytest.mark.parametrize("clustered, expect_unused_on_replica", [(True, False), (False, True)])
async def test_index_used_on_a_peer_is_not_unused(clean_store, target_db, clustered, expect_unused_on_replica):
    primary_db, replica_db = await target_db(SCHEMA), await target_db(SCHEMA)
    await _use_index(primary_db)
    tags = {"cluster": "orders"} if clustered else {}
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [
            InstanceIn(name="orders-primary", engine="postgres", host="127.0.0.1", port=5432, dbname=primary_db,
                       user="postgres", tags={**tags, "role": "primary"}),
            InstanceIn(name="orders-replica", engine="postgres", host="127.0.0.1", port=5432, dbname=replica_db,
                       user="postgres", tags={**tags, "role": "replica"}),
        ], actor="test")
    await _sweep_twice(clean_store)
    assert "public.accounts_region_idx" not in await _unused(clean_store, "orders-primary")
    assert ("public.accounts_region_idx" in await _unused(clean_store, "orders-replica")) is expect_unused_on_replica


async def test_index_whose_name_needs_quoting_used_on_a_peer_is_not_unused(clean_store, target_db):
    primary_db, replica_db = await target_db(SCHEMA), await target_db(SCHEMA)
    await _use_index(primary_db, "Accounts By Region")
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [
            InstanceIn(name=f"orders-{role}", engine="postgres", host="127.0.0.1", port=5432, dbname=db,
                       user="postgres", tags={"cluster": "orders", "role": role})
            for role, db in (("primary", primary_db), ("replica", replica_db))], actor="test")
    await _sweep_twice(clean_store)
    assert "public.Accounts By Region" not in await _unused(clean_store, "orders-primary")
    assert "public.Accounts By Region" not in await _unused(clean_store, "orders-replica")
    assert "public.accounts_region_idx" in await _unused(clean_store, "orders-replica")


async def test_a_peer_without_samples_is_named_not_counted_as_zero_scans(clean_store, target_db):
    """orders-down is in the cluster but never reports (closed port): nobody knows its scans."""
    db = await target_db(SCHEMA)
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [
            InstanceIn(name="orders-up", engine="postgres", host="127.0.0.1", port=5432, dbname=db,
                       user="postgres", tags={"cluster": "orders", "role": "primary"}),
            InstanceIn(name="orders-down", engine="postgres", host="127.0.0.1", port=1, dbname=db,
                       user="postgres", tags={"cluster": "orders", "role": "replica"}),
        ], actor="test")
    await _sweep_twice(clean_store)
    details = (await _unused(clean_store, "orders-up"))["public.accounts_region_idx"]
    assert details["checked_peers"] is False and details["missing_peers"] == ["orders-down"]
