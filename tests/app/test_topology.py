"""Topology detected on every run, on a real PostgreSQL 15 primary and streaming standby with no tags:
standbys matched by what they report, failover seen on the next run, replication peers by set and database."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import asyncpg
import pytest

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.settings import Settings
from app.sweep import Selector, Sweeper
from app.topology import Topology, members_json
from tests.collectors.postgres.conftest import ReplicaPair, replica_pair

pytestmark = pytest.mark.slow
FRESH_INDEX = {"index_advice": {"thresholds": {"unused_index_min_window_days": 0, "unused_index_min_bytes": 0}}}
SCHEMA = """
create table accounts (id int primary key, region int, note text);
insert into accounts select g, g % 50, 'x' from generate_series(1, 5000) g;
create index accounts_region_idx on accounts (region);
create index "Accounts By Note" on accounts (note);
analyze accounts;
"""


@pytest.fixture
def pair() -> Iterator[ReplicaPair]:
    """A fresh pair per test: the tests stop and promote its servers."""
    yield from replica_pair("dbf_topo_standby", "dbf_topo_slot", {"hot_standby_feedback": "on"})


def entry(name: str, cluster, dbname: str = "postgres", **kw) -> InstanceIn:
    return InstanceIn(name=name, engine="postgres", host="127.0.0.1", port=cluster.port, dbname=dbname,
                      user="postgres", **kw)


async def register(store, *items: InstanceIn) -> None:
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, list(items), actor="test")


async def sweep(store, collectors: list[str], times: int = 1) -> None:
    sweeper = Sweeper(store, Settings(worker={"backoff_base_s": 0, "identity_ttl_s": 0, "connect_timeout_s": 2}))
    try:
        for _ in range(times):
            await sweeper.sweep(collectors, Selector())
    finally:
        await sweeper.close()


async def live(store) -> set[tuple[str, str, str]]:
    async with store.raw() as conn:
        rows = await conn.fetch("select i.name, f.check, f.object from findings f join instances i on i.id = f.instance_id "
                                "where f.state <> 'resolved'")
    return {(r["name"], r["check"], r["object"]) for r in rows}


async def sql(cluster, *statements: str, dbname: str = "postgres") -> list:
    conn = await asyncpg.connect(host=cluster.host, port=cluster.port, user="postgres", database=dbname)
    try:
        return [await (conn.fetch(s) if s.lstrip().lower().startswith("select") else conn.execute(s))
                for s in statements]
    finally:
        await conn.close()


async def streaming(pair: ReplicaPair) -> None:
    for _ in range(100):
        [rows] = await sql(pair.primary, "select state from pg_stat_replication")
        if [r["state"] for r in rows] == ["streaming"]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the standby never streamed")


async def topology(store) -> dict[str, dict]:
    async with store.raw() as conn:
        return {m["instance"]: m for m in members_json(await Topology.load(conn))}


async def test_a_streaming_standby_without_tags_is_linked_and_stopping_it_is_reported(clean_store, pair):
    await streaming(pair)
    await register(clean_store, entry("pg-primary", pair.primary), entry("pg-standby", pair.standby))
    await sweep(clean_store, ["replication"], times=2)
    seen = await topology(clean_store)
    assert seen["pg-standby"]["role"] == "standby" and seen["pg-standby"]["upstream"] == "pg-primary"
    assert seen["pg-primary"]["role"] == "primary" and seen["pg-standby"]["streaming"] is True
    assert seen["pg-primary"]["server_id"] == seen["pg-standby"]["server_id"]
    assert seen["pg-standby"]["replication_set"] == "pg-primary"
    assert not {f for f in await live(clean_store) if f[1] in ("standby_disconnected", "wal_receiver_not_streaming")}

    pair.standby.pg_ctl("stop", "-m", "fast", "-w")
    await sweep(clean_store, ["replication"], times=2)
    found = await live(clean_store)
    assert ("pg-primary", "standby_disconnected", "pg-standby") in found
    assert [f for f in found if f[1] == "standby_disconnected"] == [("pg-primary", "standby_disconnected", "pg-standby")]


async def test_after_promotion_the_next_run_treats_the_standby_as_a_primary(clean_store, pair):
    await streaming(pair)
    await register(clean_store, entry("pg-primary", pair.primary), entry("pg-standby", pair.standby))
    await sweep(clean_store, ["replication", "partitions"])
    async with clean_store.raw() as conn:
        before = await conn.fetchval("select count(*) from collector_runs r join instances i on i.id = r.instance_id "
                                     "where i.name = 'pg-standby' and r.collector = 'partitions'")
    assert before == 0  # partition maintenance is for primaries only

    await sql(pair.standby, "select pg_promote(wait => true)")
    await sweep(clean_store, ["replication", "partitions"])
    seen = await topology(clean_store)
    assert seen["pg-standby"]["role"] == "primary" and seen["pg-standby"]["upstream"] is None
    async with clean_store.raw() as conn:
        after = await conn.fetchval("select count(*) from collector_runs r join instances i on i.id = r.instance_id "
                                    "where i.name = 'pg-standby' and r.collector = 'partitions' and r.status = 'ok'")
    assert after == 1
    found = await live(clean_store)
    assert not [f for f in found if f[1] in ("wal_receiver_not_streaming", "standby_disconnected")]
    await sweep(clean_store, ["replication"])  # the topology this sweep starts from has both as primaries
    found = await live(clean_store)
    assert not [f for f in found if f[1] in ("wal_receiver_not_streaming", "standby_disconnected")]
    # Both accept writes now: the old primary was never fenced.
    assert {("pg-primary", "multiple_primaries", "pg-standby"), ("pg-standby", "multiple_primaries", "pg-primary")} <= found

    pair.primary.pg_ctl("stop", "-m", "fast", "-w")
    await sweep(clean_store, ["replication"], times=2)  # the second starts from "pg-primary is unreachable"
    found = await live(clean_store)
    assert ("pg-primary", "instance_unreachable", "server") in found
    assert not [f for f in found if f[0] == "pg-standby" and f[1] == "multiple_primaries"]


async def test_peers_are_the_same_database_on_the_set_never_another_database(clean_store, pair):
    await streaming(pair)
    await sql(pair.primary, "create database shop", "create database other")
    for db in ("shop", "other"):
        await sql(pair.primary, SCHEMA, dbname=db)
    # Wait for the standby to have replayed both databases.
    for _ in range(100):
        [rows] = await sql(pair.standby, "select count(*) as n from pg_database where datname in ('shop', 'other')")
        if rows[0]["n"] == 2:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    # accounts_region_idx is scanned in `other` on the primary and in `shop` on the standby only;
    # "Accounts By Note" only in `shop`, on the standby.
    no_seqscan = "set enable_seqscan = off"
    scan_region = "select count(*) from accounts where region = 7"
    scan_note = "select count(*) from accounts where note = 'y'"
    await sql(pair.primary, no_seqscan, scan_region, dbname="other")
    await sql(pair.standby, no_seqscan, scan_region, scan_note, dbname="shop")
    await register(clean_store,
                   entry("shop-primary", pair.primary, "shop", overrides=FRESH_INDEX),
                   entry("shop-standby", pair.standby, "shop", overrides=FRESH_INDEX),
                   entry("other-primary", pair.primary, "other", overrides=FRESH_INDEX))
    await sweep(clean_store, ["index_advice"], times=2)
    unused = {(name, obj) for name, check, obj in await live(clean_store) if check == "unused_index"}
    # The standby scans both of shop's indexes: not unused on the primary. other's note index is unused,
    # whatever shop does: other databases on the same server are not replicas of it.
    assert ("shop-primary", "public.accounts_region_idx") not in unused
    assert ("shop-primary", "public.Accounts By Note") not in unused
    assert ("other-primary", "public.Accounts By Note") in unused
    async with clean_store.raw() as conn:
        peers = {m.name: m for m in (await Topology.load(conn)).members.values()}
    topo = Topology(members={m.id: m for m in peers.values()})
    assert topo.replication_peers(peers["shop-primary"].id) == ["shop-standby"]
    assert topo.replication_peers(peers["other-primary"].id) == []

    # The standby goes away and its samples age out: nobody knows its scans any more. The
    # finding says so instead of counting it as zero scans.
    pair.standby.pg_ctl("stop", "-m", "fast", "-w")
    async with clean_store.raw() as conn:
        await conn.execute("delete from samples where instance_id = $1", peers["shop-standby"].id)
    await sweep(clean_store, ["index_advice"])
    async with clean_store.raw() as conn:
        details = await conn.fetchval(
            "select f.details from findings f join instances i on i.id = f.instance_id where i.name = 'shop-primary' "
            "and f.check = 'unused_index' and f.object = 'public.Accounts By Note' and f.state <> 'resolved'")
    details = json.loads(details) if isinstance(details, str) else details
    assert details["checked_peers"] is False and details["missing_peers"] == ["shop-standby"]


async def test_the_topology_api_shows_the_detected_set(clean_store, pair, client, keys):
    from tests.conftest import bearer

    await streaming(pair)
    await register(clean_store, entry("pg-primary", pair.primary), entry("pg-standby", pair.standby))
    await sweep(clean_store, ["replication"])
    resp = await client.get("/api/v1/topology", headers=bearer(keys["viewer"]))
    assert resp.status_code == 200
    by_name = {m["instance"]: m for m in resp.json()}
    assert by_name["pg-standby"]["upstream"] == "pg-primary" and by_name["pg-standby"]["role"] == "standby"
    assert by_name["pg-primary"]["replication_set"] == by_name["pg-standby"]["replication_set"] == "pg-primary"
    assert (await client.get("/api/v1/topology")).status_code == 401


async def test_a_mariadb_replica_is_linked_to_its_source_without_tags(clean_store):
    from tests.collectors.mysql.servers import MARIADBD, make_replica, start_mariadb, stop_mariadb

    if not os.path.exists(MARIADBD):
        pytest.skip("mariadbd is not installed")
    source, replica = start_mariadb("topo_src", 61), start_mariadb("topo_rep", 62)
    try:
        make_replica(replica, source)
        for name, server in (("my-source", source), ("my-replica", replica)):
            await register(clean_store, InstanceIn(name=name, engine="mariadb", host="127.0.0.1", port=server.port,
                                                   user="root"))
        await sweep(clean_store, ["replication"])
        seen = await topology(clean_store)
        assert seen["my-replica"]["role"] == "standby" and seen["my-replica"]["upstream"] == "my-source"
        assert seen["my-source"]["role"] == "primary" and seen["my-replica"]["replication_set"] == "my-source"
        assert seen["my-replica"]["server_id"] != seen["my-source"]["server_id"]
    finally:
        stop_mariadb(replica)
        stop_mariadb(source)
