"""Fixtures of the data quality tests: an own store (dbf_q17_ prefix), monitored PostgreSQL and
MariaDB databases loaded by each test, and inventory entries pointing at them."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiomysql
import asyncpg
import pytest

from app.db import Store
from tests.conftest import migrated_database, pg_url

MARIA = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "autocommit": True}


@pytest.fixture(scope="session")
async def store_url() -> AsyncIterator[str]:
    """The quality tests' own store: they count findings and samples, which other tests' runs would add to."""
    async with migrated_database(f"dbf_q17_store_{os.getpid()}") as url:
        yield url


async def past_partitions(conn: asyncpg.Connection, days: int) -> None:
    """Daily samples partitions back `days` days: the tests inject earlier times for history."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for n in range(1, days + 1):
        day = today - timedelta(days=n)
        await conn.execute(f'create table if not exists "samples_p{day:%Y%m%d}" partition of samples '
                           f"for values from ('{day.isoformat()}') to ('{(day + timedelta(days=1)).isoformat()}')")


@pytest.fixture
async def qstore(clean_store: Store) -> Store:
    """The store with no checks, no inventory, and samples partitions for the past 15 days."""
    async with clean_store.raw() as conn:
        await conn.execute("truncate quality_checks, collector_runs, findings restart identity cascade")
        await past_partitions(conn, 15)
    return clean_store


@pytest.fixture
def pg_db(target_db):
    return functools.partial(target_db, prefix="dbf_q17")
@pytest.fixture
def pg_qc_db(target_db):
    return functools.partial(target_db, prefix="dbf_qc")


async def pg_exec(db: str, *statements: str) -> None:
    conn = await asyncpg.connect(pg_url(db))
    try:
        for s in statements:
            await conn.execute(s)
    finally:
        await conn.close()


def _maria_schemas(prefix: str):
    async def factory() -> AsyncIterator:
        made: list[str] = []

        async def make(*statements: str) -> str:
            name = f"{prefix}{uuid.uuid4().hex[:10]}"
            made.append(name)
            await maria_exec(None, f"create database `{name}`")
            await maria_exec(name, *statements)
            return name

        yield make
        for name in made:
            await maria_exec(None, f"drop database if exists `{name}`")

    return factory


# Factories: a fresh MariaDB schema loaded with statements, dropped afterwards.
maria_db = pytest.fixture(_maria_schemas("dbf_q17_"), name="maria_db")
maria_qc_db = pytest.fixture(_maria_schemas("dbf_qc_"), name="maria_qc_db")


async def maria_exec(db: str | None, *statements: str) -> list:
    conn = await aiomysql.connect(db=db, **MARIA)
    rows: list = []
    try:
        async with conn.cursor() as cur:
            for s in statements:
                await cur.execute(s)
                rows = list(await cur.fetchall())
    finally:
        conn.close()
    return rows


async def register(store: Store, name: str, engine: str, dbname: str, tags: dict | None = None) -> int:
    """An inventory entry for a test database on the machine's PostgreSQL or MariaDB."""
    import json

    port, user = (3306, "root") if engine == "mariadb" else (5432, "postgres")
    async with store.raw() as conn:
        return await conn.fetchval(
            'insert into instances (name, engine, host, port, dbname, "user", tls_mode, tags) '
            "values ($1, $2, '127.0.0.1', $3, $4, $5, 'disable', $6) returning id",
            name, engine, port, dbname, user, json.dumps(tags or {}))


async def define(store: Store, *raw: dict) -> None:
    """Store checks as the API would (validated, origin api), without the scan review."""
    from app.quality.definitions import parse_definitions, save_check

    checks, problems = parse_definitions(list(raw))
    assert problems == []
    async with store.raw() as conn:
        for check in checks:
            await save_check(conn, check, "api", "test")


async def run_checks(store: Store, settings, **kw):
    """One run of the stored checks (QualityRunner.run's keywords: select_, now, due_only...)."""
    from app.quality.runner import QualityRunner

    runner = QualityRunner(store, settings)
    try:
        return await runner.run(**kw)
    finally:
        await runner.close()


async def findings_of(store: Store, check: str, state: str | None = None) -> list[dict]:
    """The findings of one check name (optionally in one state), by object."""
    async with store.raw() as conn:
        return [dict(r) for r in await conn.fetch(
            "select f.object, f.severity, f.state, f.title, f.details, i.name as instance from findings f "
            "join instances i on i.id = f.instance_id where f.check = $1 and ($2::text is null or f.state = $2) "
            "order by f.object", check, state)]
