"""Migrations, readiness, URL helpers and the store's own daily partitions, on fresh databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timezone

import asyncpg
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.db import Store, StoreNotReady, async_url, plain_url, redact_url
from app.settings import get_settings
from app.store_partitions import maintain_store_partitions

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


runner = CliRunner()


@pytest.fixture
async def empty_db() -> AsyncIterator[str]:
    name = f"dbf_t_mig_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'create database "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.close()


@pytest.fixture
def use_store(monkeypatch):
    def point_at(url: str) -> None:
        monkeypatch.setenv("DBFLEET_DATABASE_URL", url)
        monkeypatch.delenv("DBFLEET_CONFIG", raising=False)
        get_settings.cache_clear()

    yield point_at
    get_settings.cache_clear()


async def invoke(*args: str):
    return await asyncio.to_thread(runner.invoke, cli, list(args))


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch(
            "select tablename from pg_tables where schemaname = 'public'")}
    finally:
        await conn.close()


async def test_unmigrated_store_is_refused_until_dbfleet_migrate(empty_db, use_store):
    store = Store(empty_db)
    try:
        with pytest.raises(StoreNotReady, match=r"store is at migration none, code needs \w+: run `dbfleet migrate`"):
            await store.check_ready()
        use_store(empty_db)
        for args in (["worker", "--shard", "0/1"], ["serve"], ["findings"], ["sweep"]):
            r = await invoke(*args)
            assert r.exit_code == 2, (args, r.output)
            assert "run `dbfleet migrate`" in r.stderr, args
        r = await invoke("migrate")
        assert r.exit_code == 0, r.stderr
        assert "store migrated to head" in r.stdout
        await store.check_ready()
        made = await tables(empty_db)
        assert {"instances", "collector_runs", "findings", "samples", "query_stats", "api_keys", "audit_log",
                "outbox", "alembic_version"} <= made
        today = datetime.now(timezone.utc).date()
        assert partition_name("samples", today) in made and partition_name("query_stats", today) in made
        # Migrating again is a no-op.
        assert (await invoke("migrate")).exit_code == 0
        assert await tables(empty_db) == made
    finally:
        await store.dispose()


async def test_unreachable_store_is_not_ready_and_the_url_is_redacted():
    store = Store("postgresql://postgres:hunter2@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StoreNotReady) as caught:
            await store.check_ready()
    finally:
        await store.dispose()
    assert "unreachable" in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url, asyncpg_url, plain", [
    ("postgres://u@h/db", "postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
    ("postgresql://u@h:5433/db", "postgresql+asyncpg://u@h:5433/db", "postgresql://u@h:5433/db"),
    ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
])
def test_url_forms(url: str, asyncpg_url: str, plain: str):
    assert async_url(url) == asyncpg_url and plain_url(url) == plain


@pytest.mark.parametrize("url, redacted", [
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p%40ss@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_redact_url(url: str, redacted: str):
    assert redact_url(url) == redacted


@pytest.fixture
async def migrated(empty_db, use_store) -> str:
    use_store(empty_db)
    assert (await invoke("migrate")).exit_code == 0
    return empty_db


def _day(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, 5, tzinfo=timezone.utc)


def _names(changed: list[str], table: str = "samples") -> list[str]:
    return sorted(c.removeprefix("public.") for c in changed if c.removeprefix("public.").startswith(table + "_p"))


async def test_store_partitions_are_made_ahead_and_dropped_after_retention(migrated):
    conn = await asyncpg.connect(migrated)
    try:
        real = {r[0] for r in await conn.fetch("select tablename from pg_tables where tablename like 'samples_p%'")}
        assert len(real) >= 2
        # Back after years: today's partition first, then two ahead; nothing refilled in between.
        changed = await maintain_store_partitions(conn, premake_days=2, retention_days=3, now=_day(date(2030, 1, 10)))
        assert _names(changed["created"]) == [partition_name("samples", date(2030, 1, d)) for d in (10, 11, 12)]
        assert _names(changed["created"], "query_stats") == \
            [partition_name("query_stats", date(2030, 1, d)) for d in (10, 11, 12)]
        assert real == set(_names(changed["dropped"]))
        again = await maintain_store_partitions(conn, premake_days=2, retention_days=3, now=_day(date(2030, 1, 10)))
        assert again == {"created": [], "dropped": []}
        await conn.execute("insert into samples (ts, instance_id, collector, metric, value) "
                           "values ('2030-01-12 23:59:59+00', 1, 'c', 'm', 1)")
        with pytest.raises(asyncpg.PostgresError, match="no partition"):
            await conn.execute("insert into samples (ts, instance_id, collector, metric, value) "
                               "values ('2030-01-13 00:00:00+00', 1, 'c', 'm', 1)")
        later = await maintain_store_partitions(conn, premake_days=2, retention_days=3, now=_day(date(2030, 1, 14)))
        assert _names(later["dropped"]) == [partition_name("samples", date(2030, 1, 10))]
        assert _names(later["created"]) == [partition_name("samples", date(2030, 1, d)) for d in (14, 15, 16)]
    finally:
        await conn.close()
