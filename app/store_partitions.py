"""Daily partitions of the store's own time series, kept by the same planner and executor that
dbfleet uses on monitored databases (collectors/postgres/partition_*)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg

from app.models import PARTITIONED_TABLES
from collectors.engines.pg import PgConnection
from collectors.postgres.partition_apply import apply
from collectors.postgres.partition_plan import PartitionPolicy, plan
from collectors.postgres.partitions import discover


async def _bootstrap(conn: asyncpg.Connection, table: str, today: datetime) -> bool:
    """Make sure today's partition exists, so the planner continues from today.

    A new store has no partition at all; a store back after a long outage would otherwise be
    refilled day by day from its newest partition (at most 36 per run, each soon dropped again by
    retention) while today's samples, written in the same transaction as findings, had nowhere to go.
    Nothing is ever written with a past timestamp, so the gap this leaves holds no data.
    """
    name = f"{table}_p{today:%Y%m%d}"
    if await conn.fetchval("select to_regclass($1) is not null", f"public.{name}"):
        return False
    try:
        async with conn.transaction():
            # The name comes from our own table list and a date: nothing user-supplied reaches the SQL.
            await conn.execute(
                f'create table if not exists "{name}" partition of "{table}" '
                f"for values from ('{today.isoformat()}') to ('{(today + timedelta(days=1)).isoformat()}')")
    except asyncpg.InvalidObjectDefinitionError:  # another partition already covers today
        return False
    return True


async def maintain_store_partitions(conn: asyncpg.Connection, premake_days: int, retention_days: int,
                                    now: datetime | None = None) -> dict[str, list[str]]:
    """Create today's and `premake_days` partitions ahead; detach and drop those past retention."""
    now = now or datetime.now(timezone.utc)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    created = [f"public.{t}_p{today:%Y%m%d}" for t in PARTITIONED_TABLES if await _bootstrap(conn, t, today)]
    version = await conn.fetchval("select current_setting('server_version_num')::int")
    tables = [t for t in await discover(PgConnection(conn, version, False))
              if t.schema == "public" and t.name in PARTITIONED_TABLES]
    policies = [PartitionPolicy(table=f"public.{t}", interval="1 day", premake=premake_days,
                                retention=f"{retention_days} days") for t in PARTITIONED_TABLES]
    outcomes = await apply(conn, plan(tables, policies, now))
    failed = [f"{o.statement.partition}: {o.message}" for o in outcomes if o.status in ("error", "refused")]
    if failed:
        raise RuntimeError("store partition maintenance failed: " + "; ".join(failed))
    created += [o.statement.partition for o in outcomes if o.status == "ok" and o.statement.action == "create_partition"]
    dropped = [o.statement.partition for o in outcomes if o.status == "ok" and o.statement.action == "drop_partition"]
    return {"created": created, "dropped": dropped}
