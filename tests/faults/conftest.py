"""Fixtures for the fault suite: a store cluster of its own (it gets restarted), a monitored
cluster of its own (it gets restarted and frozen), each made once per session on free loopback
ports; a fresh store database per test from a migrated template (names dbf_fault18_*)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from app.db import Store, migrate
from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.store_partitions import maintain_store_partitions
from tests.collectors.postgres.conftest import PG15_BIN, PgCluster, start_cluster

TEMPLATE = "dbf_fault18_tmpl"


def _cluster(settings: dict[str, str]) -> PgCluster:
    if not (PG15_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the PostgreSQL 15 binaries")
    return start_cluster(PG15_BIN, {"max_connections": "300", **settings})


def url_of(cluster: PgCluster, db: str = "postgres") -> str:
    return f"postgresql://postgres@{cluster.host}:{cluster.port}/{db}"


@pytest.fixture(scope="session")
async def store_cluster() -> AsyncIterator[PgCluster]:
    # The whole text of the sweep's long run statements in pg_stat_activity (the SIGKILL test finds them).
    cluster = _cluster({"cluster_name": "'dbf_fault18_store'", "track_activity_query_size": "'64kB'"})
    await _template(cluster)
    yield cluster
    cluster.stop()


async def _template(cluster: PgCluster) -> None:
    admin = await asyncpg.connect(url_of(cluster))
    await admin.execute(f"create database {TEMPLATE}")
    await admin.close()
    await asyncio.to_thread(migrate, url_of(cluster, TEMPLATE))
    conn = await asyncpg.connect(url_of(cluster, TEMPLATE))
    await maintain_store_partitions(conn, premake_days=2, retention_days=14)
    await conn.close()


@pytest.fixture
async def fault_store(store_cluster: PgCluster) -> AsyncIterator[Store]:
    """A migrated store database of this test's own, on the restartable store cluster."""
    name = f"dbf_fault18_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url_of(store_cluster))
    await admin.execute(f"create database {name} template {TEMPLATE}")
    await admin.close()
    store = Store(url_of(store_cluster, name), pool_size=20)
    yield store
    await store.dispose()
    admin = await asyncpg.connect(url_of(store_cluster))
    await admin.execute(f"drop database if exists {name} with (force)")
    await admin.close()


@pytest.fixture(scope="session")
def monitored_cluster() -> Iterator[PgCluster]:
    """The monitored server the fleet's healthy instances live on: one database per instance."""
    cluster = _cluster({"cluster_name": "'dbf_fault18_fleet'"})
    yield cluster
    cluster.stop()


async def monitored_databases(cluster: PgCluster, count: int) -> list[str]:
    """dbf_fault18_db001.. on the monitored cluster, made once and reused across tests."""
    admin = await asyncpg.connect(url_of(cluster))
    try:
        have = {r[0] for r in await admin.fetch("select datname from pg_database")}
        names = [f"dbf_fault18_db{i:03d}" for i in range(1, count + 1)]
        for name in names:
            if name not in have:
                await admin.execute(f"create database {name}")
    finally:
        await admin.close()
    return names


async def register(store: Store, items: list[InstanceIn]) -> None:
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, items, actor="fault-suite")


def pg_instance(name: str, port: int, dbname: str = "postgres", **kw) -> InstanceIn:
    return InstanceIn(name=name, engine="postgres", host="127.0.0.1", port=port, dbname=dbname, user="postgres",
                      tls_mode="disable", **kw)
