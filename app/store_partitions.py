"""Daily partitions of the store's own time series: created ahead, dropped after retention."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import asyncpg

from app.models import PARTITIONED_TABLES

_CHILDREN = """
select c.relname from pg_inherits i
join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
where p.relname = $1 and p.relnamespace = 'public'::regnamespace
"""


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


async def maintain_store_partitions(conn: asyncpg.Connection, premake_days: int, retention_days: int,
                                    today: date | None = None) -> dict[str, list[str]]:
    """Create today's and the next `premake_days` partitions; drop those past retention."""
    today = today or datetime.now(timezone.utc).date()
    created: list[str] = []
    dropped: list[str] = []
    for table in PARTITIONED_TABLES:
        existing = {r["relname"] for r in await conn.fetch(_CHILDREN, table)}
        for offset in range(-1, premake_days + 1):
            day = today + timedelta(days=offset)
            name = partition_name(table, day)
            if name not in existing:
                # Names are built from our own table list and a date: nothing user-supplied.
                await conn.execute(
                    f'create table if not exists "{name}" partition of "{table}" '
                    f"for values from ('{day.isoformat()}') to ('{(day + timedelta(days=1)).isoformat()}')")
                created.append(name)
        cutoff = today - timedelta(days=retention_days)
        for name in sorted(existing):
            suffix = name.rsplit("_p", 1)[-1]
            if suffix.isdigit() and datetime.strptime(suffix, "%Y%m%d").date() < cutoff:
                await conn.execute(f'drop table if exists "{name}"')
                dropped.append(name)
    return {"created": created, "dropped": dropped}
