"""Database discovery with include/exclude patterns, on the machine's PostgreSQL (databases) and
MariaDB (schemas): entries added, covered ones left alone, vanished ones gone with their findings
resolved, returned ones revived, every change audited, a server that cannot be listed untouched."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import aiomysql
import pytest
from sqlalchemy import select

from app.findings import InstanceRef, record_run
from app.inventory.databases import discover_all, discover_databases, wanted
from app.inventory.schemas import ServerIn
from app.inventory.store import upsert_servers
from app.models import Instance, Server
from collectors.spec import Finding, Result, Severity
from tests.conftest import create_database, drop_database


@pytest.mark.parametrize("name, patterns, expected", [
    ("shop", {"include": ["*"], "exclude": []}, True),
    ("shop_tmp", {"include": ["*"], "exclude": ["*_tmp"]}, False),
    ("app_1", {"include": ["shop", "app_*"]}, True),
    ("Shop", {"include": ["shop"]}, False),  # names are case-sensitive, as the servers' are
    ("x", {}, True),
])
def test_patterns_are_shell_globs(name: str, patterns: dict, expected: bool):
    assert wanted(name, patterns) is expected


async def _server(store, item: ServerIn) -> Server:
    async with store.sessions() as session, session.begin():
        await upsert_servers(session, [item], actor="test")
    async with store.sessions() as session:
        return (await session.execute(select(Server).where(Server.name == item.name))).scalar_one()


async def _entries(store, server: str) -> dict[str, Instance]:
    async with store.sessions() as session:
        rows = (await session.execute(select(Instance).join(Server, Server.id == Instance.server_id)
                                      .where(Server.name == server))).scalars()
        return {i.name: i for i in rows}


@pytest.fixture
async def pg_databases():
    tag = uuid.uuid4().hex[:6]
    names = [f"dbf_srv_{tag}_{n}" for n in ("shop", "clean", "tmp")]
    for name in names:
        await create_database(name)
    yield tag, names
    for name in names:
        await drop_database(name)


async def test_postgres_databases_become_entries_and_vanished_ones_are_gone(clean_store, settings, pg_databases):
    tag, (shop, clean, _tmp) = pg_databases
    patterns = {"include": [f"dbf_srv_{tag}_*"], "exclude": ["*_tmp"], "listed": [shop]}
    server = await _server(clean_store, ServerIn(name="pg-local", engine="postgres", host="127.0.0.1", port=5432,
                                                 user="postgres", tags={"env": "test"}, databases=patterns))
    result = await discover_databases(clean_store, settings, server)
    # shop is listed already (one entry per database); tmp is excluded; postgres etc. not included.
    assert (result.error, result.found, result.added) == (None, [clean, shop], [f"pg-local.{clean}"])
    entries = await _entries(clean_store, "pg-local")
    found = entries[f"pg-local.{clean}"]
    assert (found.source, found.dbname, found.enabled, found.tags, found.user) == ("discovered", clean, True,
                                                                                  {"env": "test"}, "postgres")
    assert entries[f"pg-local.{shop}"].source == "manual"
    assert (await discover_databases(clean_store, settings, server)).added == []

    # A finding on the discovered entry, then its database is dropped: gone, finding resolved.
    async with clean_store.raw() as conn:
        await record_run(conn, InstanceRef(found.id, found.name, "postgres", {}), "index_advice",
                         Result(findings=[Finding("unused_index", "public.i", Severity.info, "unused")]),
                         datetime.now(timezone.utc), 1.0)
    await drop_database(clean)
    gone = await discover_databases(clean_store, settings, server)
    assert gone.gone == [found.name] and gone.added == []
    async with clean_store.raw() as conn:
        state = await conn.fetchrow("select f.state, f.state_note, i.gone_at from findings f "
                                    "join instances i on i.id = f.instance_id")
        audits = [tuple(r) for r in await conn.fetch(
            "select actor, action, target, details from audit_log where action = 'server.discover' order by id")]
    assert state["state"] == "resolved" and clean in state["state_note"] and state["gone_at"] is not None
    assert [a[:3] for a in audits] == [("discovery:databases", "server.discover", "pg-local")] * 2
    assert audits[1][3] == {"added": [], "returned": [], "gone": [found.name]}

    await create_database(clean)
    back = await discover_databases(clean_store, settings, server)
    assert back.returned == [found.name] and (await _entries(clean_store, "pg-local"))[found.name].gone_at is None
    # The listed entry is never touched by discovery, even when its database is gone.
    await drop_database(shop)
    assert (await discover_databases(clean_store, settings, server)).gone == []


@pytest.fixture
async def maria_schemas():
    tag = uuid.uuid4().hex[:6]
    names = [f"dbf_srv_{tag}_{n}" for n in ("shop", "reports", "reports_archive", "clean")]
    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        async with conn.cursor() as cur:
            for name in names:
                await cur.execute(f"CREATE DATABASE `{name}`")
        yield tag, names, conn
    finally:
        async with conn.cursor() as cur:
            for name in names:
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


async def test_mariadb_schemas_become_entries_and_grouped_schemas_are_covered(clean_store, settings, maria_schemas):
    tag, (shop, reports, archive, clean), conn = maria_schemas
    item = ServerIn(name="maria-local", engine="mariadb", host="127.0.0.1", port=3306, user="root",
                    databases={"include": [f"dbf_srv_{tag}_*", "mysql", "sys"],
                               "listed": [{"name": "reports", "schemas": [reports, archive]}]})
    server = await _server(clean_store, item)
    result = await discover_databases(clean_store, settings, server)
    # System schemas never become entries; the two grouped schemas are one entry already.
    assert result.error is None and set(result.found) == {shop, reports, archive, clean}
    assert sorted(result.added) == sorted([f"maria-local.{shop}", f"maria-local.{clean}"])
    entries = await _entries(clean_store, "maria-local")
    assert sorted(entries) == sorted(["reports", f"maria-local.{shop}", f"maria-local.{clean}"])
    assert len({e.server_id for e in entries.values()}) == 1
    async with conn.cursor() as cur:
        await cur.execute(f"DROP DATABASE `{shop}`")
    assert (await discover_databases(clean_store, settings, server)).gone == [f"maria-local.{shop}"]


async def test_an_unreachable_server_changes_nothing_and_discover_all_reports_it(clean_store, settings):
    await _server(clean_store, ServerIn(name="nowhere", engine="postgres", host="127.0.0.1", port=1, user="postgres",
                                        databases={"include": ["*"]}))
    await _server(clean_store, ServerIn(name="listed-only", engine="postgres", host="127.0.0.1", port=2,
                                        databases=["x"]))
    results = await discover_all(clean_store, settings)
    # Only servers with patterns are listed; the failure is reported, nothing written.
    assert [r.server for r in results] == ["nowhere"] and results[0].error
    assert await _entries(clean_store, "nowhere") == {}
    assert await discover_all(clean_store, settings, only="listed-only") == []


async def test_the_worker_job_discovers_only_its_shards_servers(clean_store, settings, pg_databases, caplog):
    from app.scheduler import discover_databases_job
    from app.shard import Shard

    _, (shop, _clean, _tmp) = pg_databases
    # Two names for the machine's PostgreSQL: two servers as far as the inventory knows.
    servers = [await _server(clean_store, ServerIn(name=f"pg-{n}", engine="postgres", host=host, port=5432,
                                                   user="postgres", databases={"include": [shop]}))
               for n, host in enumerate(("127.0.0.1", "localhost"))]
    owner = next(i for i in (0, 1) if Shard(i, 2).owns(servers[0].id))
    shard = Shard(owner, 2)
    mine = {s.name for s in servers if shard.owns(s.id)}
    if len(mine) != 1:
        pytest.skip("both server ids hash to one shard")
    caplog.set_level("INFO", logger="app.scheduler")
    await discover_databases_job(clean_store, settings, shard)
    for s in servers:
        assert list(await _entries(clean_store, s.name)) == ([f"{s.name}.{shop}"] if s.name in mine else [])
    assert sorted(r.getMessage().split()[3].rstrip(":") for r in caplog.records if "databases on server" in r.getMessage()) == \
        sorted(mine)
