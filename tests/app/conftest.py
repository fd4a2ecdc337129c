"""Fixtures shared by the app tests: what a target database holds after partition maintenance."""

from __future__ import annotations

import asyncpg
import pytest


@pytest.fixture
def partitions_of():
    """async (database, table) -> the names of the table's attached partitions, sorted."""
    async def read(db: str, table: str = "events") -> list[str]:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}")
        try:
            return [r[0] for r in await conn.fetch(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                "where i.inhparent = $1::regclass order by 1", table)]
        finally:
            await conn.close()
    return read
