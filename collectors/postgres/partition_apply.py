"""Apply planned partition DDL on a writable connection: one statement per transaction, re-checked live.

Collector sessions are read-only, so apply() opens its own connection (application_name
dbfleet). Before each statement it looks at the live catalog: the parent must still be the same
partitioned table, a partition already created or already detached is skipped, and only a
partition this run just detached may be dropped. Running the same statements twice changes
nothing the second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from collectors.common.maintenance import MaintenanceSpec, Outcome
from collectors.engines.base import LoginFailed, Target, Unreachable
from collectors.engines.pg import _LOGIN_ERRORS, _ssl_for
from collectors.postgres.partition_plan import PlannedStatement
from collectors.postgres.partitions import plan_policies
from collectors.registry import register_maintenance

_PARENT_SQL = """
select n.nspname, c.relname from pg_partitioned_table pt
join pg_class c on c.oid = pt.partrelid join pg_namespace n on n.oid = c.relnamespace
where pt.partrelid = $1::oid
"""
_CHILD_SQL = """
select c.oid, c.relkind::text as relkind, c.relispartition,
       exists(select 1 from pg_inherits i where i.inhrelid = c.oid and i.inhparent = $3::oid) as attached_here
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = $1 and c.relname = $2
"""


async def apply(target: Mapping[str, Any] | asyncpg.Connection, statements: Sequence[PlannedStatement],
                lock_timeout_ms: int = 2000, statement_timeout_ms: int = 300_000) -> list[Outcome]:
    """Run statements one by one (each its own transaction); a failure does not stop the rest."""
    owned = not isinstance(target, asyncpg.Connection)
    conn = await asyncpg.connect(**target, server_settings={"application_name": "dbfleet"}) if owned else target
    try:
        await conn.execute(f"set lock_timeout = {int(lock_timeout_ms)}")
        await conn.execute(f"set statement_timeout = {int(statement_timeout_ms)}")
        detached: set[str] = set()
        outcomes = []
        for stmt in statements:
            outcome = await _apply_one(conn, stmt, detached)
            if stmt.action == "detach_partition" and outcome.status == "ok":
                detached.add(stmt.partition)
            outcomes.append(outcome)
        return outcomes
    finally:
        if owned:
            await conn.close()


async def _apply_one(conn: asyncpg.Connection, stmt: PlannedStatement, detached: set[str]) -> Outcome:
    try:
        reason = await _refusal(conn, stmt)
        if reason:
            return Outcome(stmt, "refused", reason)
        skip = await _already_done(conn, stmt, detached)
        if skip:
            return Outcome(stmt, "skipped", skip)
        # No explicit transaction: each statement commits alone, and DETACH CONCURRENTLY
        # may not run inside a transaction block at all.
        await conn.execute(stmt.sql)
        return Outcome(stmt, "ok", _done_message(stmt))
    except (asyncpg.PostgresError, ValueError) as e:
        return Outcome(stmt, "failed", f"{type(e).__name__}: {e}")


async def _refusal(conn: asyncpg.Connection, stmt: PlannedStatement) -> str:
    """Why the statement must not run at all (the parent is not what the plan saw), or ''."""
    row = await conn.fetchrow(_PARENT_SQL, stmt.table_oid)
    if row is None:
        return f"{stmt.table} (oid {stmt.table_oid}) is not a partitioned table"
    if (row["nspname"], row["relname"]) != (stmt.schema, stmt.table_name):
        return f"oid {stmt.table_oid} is now {row['nspname']}.{row['relname']}, not {stmt.table}; re-plan"
    return ""


async def _already_done(conn: asyncpg.Connection, stmt: PlannedStatement, detached: set[str]) -> str:
    child = await conn.fetchrow(_CHILD_SQL, stmt.part_schema, stmt.part_name, stmt.table_oid)
    if stmt.action == "create_partition":
        return f"{stmt.partition} already exists" if child is not None else ""
    if stmt.action == "detach_partition":
        return "" if child is not None and child["attached_here"] else f"{stmt.partition} is not attached to {stmt.table}"
    if child is None:
        return f"{stmt.partition} does not exist"
    if stmt.partition not in detached or child["relispartition"] or child["relkind"] != "r":
        return f"{stmt.partition} was not detached by this run; dbfleet drops only what it just detached"
    return ""


def _done_message(stmt: PlannedStatement) -> str:
    verbs = {"create_partition": "created", "detach_partition": "detached", "drop_partition": "dropped"}
    return f"{stmt.partition} {verbs[stmt.action]}"


async def apply_to(target: Target, statements: Sequence[PlannedStatement], lock_timeout_ms: int = 2000) -> list[Outcome]:
    """apply() on a writable session to an inventory target; LoginFailed / Unreachable if none opens.

    The writable session takes TLS from the instance exactly as the read-only collector session
    does: with tls_mode=require a server without TLS must refuse us, not get DDL in plain text.
    """
    params = {"host": target.host, "port": target.port, "user": target.user or None,
              "password": target.password, "database": target.dbname or None, "ssl": _ssl_for(target.tls_mode)}
    try:
        return await apply(params, statements, lock_timeout_ms=lock_timeout_ms)
    except _LOGIN_ERRORS as e:
        raise LoginFailed(target, f"login failed: {e}") from None
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise Unreachable(target, f"writable session to {target.host}:{target.port} failed "
                                  f"(tls_mode={target.tls_mode}): {str(e) or type(e).__name__}") from None


register_maintenance(MaintenanceSpec("postgres", plan_policies, apply_to))
