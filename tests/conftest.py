"""Shared fixtures: a migrated store database per test session, target databases, API clients.

Everything talks to the machine's real PostgreSQL at 127.0.0.1:5432 (user postgres, trust).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

# Test folders mirror the packages (tests/app, tests/collectors) and have no __init__.py, so once
# pytest puts tests/ on sys.path they would shadow the real `app` and `collectors` as namespace
# packages (the editable install's finder comes after the path). Put the repository first and
# import both packages now, before any test module is collected.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402,F401
import collectors  # noqa: E402,F401

from app.auth import Role, create_key  # noqa: E402
from app.db import Store, migrate  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store_partitions import maintain_store_partitions  # noqa: E402

PG_HOST = os.environ.get("DBFLEET_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DBFLEET_TEST_PG_PORT", "5432"))
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


def pg_url(db: str) -> str:
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{db}"


async def create_database(name: str, sql: str | None = None) -> str:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    if sql:
        conn = await asyncpg.connect(pg_url(name))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
    return pg_url(name)


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


@asynccontextmanager
async def migrated_database(name: str) -> AsyncIterator[str]:
    """A store database of its own, migrated to head; dropped afterwards."""
    url = await create_database(name)
    # Alembic's env.py runs its own event loop, so it cannot run on this one.
    await asyncio.to_thread(migrate, url)
    try:
        yield url
    finally:
        await drop_database(name)


@asynccontextmanager
async def own_store(name: str, pool_size: int = 10, premake_days: int = 2,
                    retention_days: int = 14) -> AsyncIterator[Store]:
    """A migrated store database of its own with its time-series partitions made, as a Store."""
    async with migrated_database(name) as url:
        store = Store(url, pool_size=pool_size)
        try:
            async with store.raw() as conn:
                await maintain_store_partitions(conn, premake_days=premake_days, retention_days=retention_days)
            yield store
        finally:
            await store.dispose()


@pytest.fixture(scope="session")
async def store_url() -> AsyncIterator[str]:
    async with migrated_database(f"dbf_test_store_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="session")
async def store(store_url: str) -> AsyncIterator[Store]:
    s = Store(store_url, pool_size=20)
    async with s.raw() as conn:
        await maintain_store_partitions(conn, premake_days=2, retention_days=14)
    yield s
    await s.dispose()


@pytest.fixture
async def clean_store(store: Store) -> Store:
    """The shared store with inventory, findings, runs, keys, audit and outbox emptied."""
    async with store.raw() as conn:
        await conn.execute("truncate servers, instances, api_keys, audit_log, outbox, samples, query_stats, query_texts "
                           "restart identity cascade")
    return store


@pytest.fixture
async def target_db() -> AsyncIterator:
    """Factory: create a database (optionally with SQL) to monitor; all are dropped afterwards."""
    made: list[str] = []

    async def make(sql: str | None = None, prefix: str = "dbf_t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        made.append(name)
        await create_database(name, sql)
        return name

    yield make
    for name in made:
        await drop_database(name)


@pytest.fixture
def settings() -> Settings:
    return Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2})


@pytest.fixture
async def app(clean_store: Store, settings: Settings):
    application = create_app(settings, clean_store.url)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def keys(app, clean_store: Store) -> dict[str, str]:
    out = {}
    async with clean_store.sessions() as session, session.begin():
        for role in Role:
            out[role.name] = await create_key(session, f"test-{role.name}", role)
    return out


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def wait_for_serve(base: str, server: subprocess.Popen, log: Path) -> None:
    """Until a `dbfleet serve` started by a test answers /healthz (60 s: a loaded 2-core machine
    takes a while to import everything); its log's tail if it exits first."""
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError(f"dbfleet serve exited: {log.read_text()[-2000:]}")
        try:
            async with httpx.AsyncClient() as client:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("dbfleet serve did not answer /healthz in 60 s")
