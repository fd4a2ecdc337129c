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
    """A table with no partition yet gets today's, so the planner has an interval to continue."""
    has_any = await conn.fetchval(
        "select exists(select 1 from pg_inherits where inhparent = to_regclass($1))", f"public.{table}")
    if has_any:
        return False
    # The name comes from our own table list and a date: nothing user-supplied reaches the SQL.
    await conn.execute(
        f'create table if not exists "{table}_p{today:%Y%m%d}" partition of "{table}" '
        f"for values from ('{today.isoformat()}') to ('{(today + timedelta(days=1)).isoformat()}')")
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
