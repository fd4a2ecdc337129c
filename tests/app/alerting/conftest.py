"""Fixtures for the alert router: a migrated store database (prefix dbf_al_) and loopback receivers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from alerting_helpers import Receiver

from app.db import Store, migrate

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ALERT_TABLES = ("outbox, alerts, alert_groups, alert_group_members, notification_log, notifications, "
                "silences, receiver_status, rule_alerts, instances, samples, audit_log")


@pytest.fixture(scope="session")
async def al_store() -> AsyncIterator[Store]:
    name = f"dbf_al_{os.getpid()}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.execute(f'create database "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    await asyncio.to_thread(migrate, url)
    store = Store(url, pool_size=10)
    yield store
    await store.dispose()
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.close()


@pytest.fixture
async def store(al_store: Store) -> Store:
    async with al_store.raw() as conn:
        await conn.execute(f"truncate {ALERT_TABLES} restart identity cascade")
    return al_store


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        r = Receiver(**kw).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
