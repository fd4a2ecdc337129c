"""The admin side of MySQL partition maintenance: plan the live catalog, then apply it audited.

Same shape as the PostgreSQL engine's (plan_live / apply with statements and outcomes) so that
app/partitions.py can drive both. apply never runs text it was handed: for each table it re-reads
information_schema (refusing anything not RANGE-partitioned on time), re-plans with the
statement's policy, and runs a statement only if the fresh plan still contains it. With keep_table
the fresh plan reads the archive tables and partitions live, and the DROP of an emptied partition
runs only if a probe under LOCK TABLES finds it empty (partition_plan.drop_emptied_partition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from collectors.common.maintenance import MaintenanceSpec, Outcome, PlannedStatement, table_glob
from collectors.engines.base import ConnectFailed, SessionLimits, Target
from collectors.mysql.partition_plan import (
    Fetch,
    NotRangePartitioned,
    Plan,
    Policy,
    RangeTable,
    load_table,
    plan_live_table,
    raw_fetcher,
    run_step,
    steps,
)
from collectors.mysql.partitions import COLUMNS, SQL, THRESHOLDS, policy_for, tables_from
from collectors.registry import register_maintenance
from collectors.spec import Connection

# What each statement does (PlannedStatement.action); its SQL the planner rendered.
Action = Literal["create_partitions", "drop_partition", "create_archive", "unpartition_archive",
                 "exchange_partition", "drop_emptied_partition"]


def _policies(policies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {**THRESHOLDS, "partition_policies": list(policies)}


def _statements(plan: Plan, policy: Policy) -> list[PlannedStatement]:
    table = plan.table
    whys = [f"{plan.ahead} partitions ahead, policy premake {policy.premake}"] * len(plan.create_sql)
    whys += [s.why for s in plan.retention]
    return [PlannedStatement(action, table.schema, table.table, partition, sql, why, policy)
            for (action, partition, sql), why in zip(steps(plan), whys)]


async def _table_statements(fetch: Fetch, table: RangeTable, policy: Policy, now: datetime) -> list[PlannedStatement]:
    return _statements(await plan_live_table(fetch, table, policy, now), policy)


async def plan_live(conn: Connection, policies: Sequence[Mapping[str, Any]], now: datetime,
                    table: str | None = None) -> list[PlannedStatement]:
    """The DDL the policies call for now, read-only. With `table` ("schema.table"), only that table,
    refused unless information_schema shows it RANGE-partitioned on a date/time column."""
    t = _policies(policies)
    if table is not None:
        schema, _, name = table.partition(".")
        live = await load_table(conn.fetch, schema, name)
        return await _table_statements(conn.fetch, live, policy_for(live.name, t), now)
    snap = {"partitions": await conn.fetch(SQL[min(SQL)]), "columns": await conn.fetch(COLUMNS[min(COLUMNS)])}
    return [s for tb in tables_from(snap) for s in await _table_statements(conn.fetch, tb, policy_for(tb.name, t), now)]


async def apply(target: Target, statements: Sequence[PlannedStatement], lock_timeout_ms: int = 2000,
                now: datetime | None = None) -> list[Outcome]:
    """Run the statements one at a time on a writable session; stop a table at its first failure."""
    now = now or datetime.now(timezone.utc)
    try:
        from collectors.engines.mysql import open_raw  # aiomysql is the mysql extra
    except ImportError as e:
        return [Outcome(s, "failed", f"the mysql driver is not installed ({e.name or e}): "
                                     "pip install 'dbfleet[mysql]'") for s in statements]
    try:
        conn = await open_raw(target, SessionLimits(lock_timeout_ms=lock_timeout_ms))
    except ConnectFailed as e:
        return [Outcome(s, "failed", str(e)) for s in statements]
    try:
        fetch = raw_fetcher(conn)
        await fetch(f"SET SESSION lock_wait_timeout = {max(1, round(lock_timeout_ms / 1000))}")
        out: list[Outcome] = []
        for stmt in statements:
            out.append(await _apply_one(fetch, stmt, now, failed={o.statement.table for o in out if o.status == "failed"}))
        return out
    finally:
        conn.close()


async def _apply_one(fetch: Fetch, stmt: PlannedStatement, now: datetime, failed: set[str]) -> Outcome:
    if stmt.table in failed:
        return Outcome(stmt, "skipped", "an earlier statement on this table failed")
    try:
        live = await load_table(fetch, stmt.schema, stmt.table_name)
        fresh = await _table_statements(fetch, live, stmt.policy, now)
    except NotRangePartitioned as e:
        return Outcome(stmt, "failed", str(e))
    except Exception as e:  # noqa: BLE001 - a probe the re-plan needs failed: nothing ran
        return Outcome(stmt, "failed", f"re-plan from the live table failed: {e}")
    if (stmt.action, stmt.sql) not in {(s.action, s.sql) for s in fresh}:
        return Outcome(stmt, "skipped", "no longer needed: the live table already has it")
    try:
        await run_step(fetch, live, stmt.action, stmt.partition, stmt.sql)
    except Exception as e:  # noqa: BLE001 - any server error is the statement's audited outcome
        return Outcome(stmt, "failed", str(e))
    return Outcome(stmt, "ok", f"{stmt.action} {stmt.partition} on {stmt.table}")


# MySQL matches a policy's `table` exactly as written (names are case-sensitive on Linux) and has
# no '*' default: a policy without `table` names no table.
register_maintenance(MaintenanceSpec("mysql", plan_live, apply, table_glob(default="")))
