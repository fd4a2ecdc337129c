"""The admin side of MySQL partition maintenance: plan the live catalog, then apply it audited.

Same shape as the PostgreSQL engine's (plan_live / apply with statements and outcomes) so that
app/partitions.py can drive both. apply never runs text it was handed: for each table it re-reads
information_schema (refusing anything not RANGE-partitioned on time), re-plans with the
statement's policy, and runs a statement only if the fresh plan still contains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from collectors.engines.base import ConnectFailed, SessionLimits, Target
from collectors.engines.mysql import open_raw
from collectors.mysql.partition_plan import Fetch, NotRangePartitioned, Policy, RangeTable, load_table, plan_table, raw_fetcher
from collectors.mysql.partitions import COLUMNS, SQL, THRESHOLDS, policy_for, tables_from
from collectors.spec import Connection

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class PlannedStatement:
    action: Literal["create_partitions", "drop_partition"]
    schema: str
    table_name: str
    partition: str   # the partition(s) it creates or drops, comma-separated
    sql: str
    why: str
    policy: Policy

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.table_name}"


@dataclass(frozen=True, slots=True)
class Outcome:
    statement: PlannedStatement
    status: Status
    message: str = ""

    @property
    def sql(self) -> str:
        return self.statement.sql


def _policies(policies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {**THRESHOLDS, "partition_policies": list(policies)}


def _statements(table: RangeTable, policy: Policy, now: datetime) -> list[PlannedStatement]:
    plan = plan_table(table, policy, now)
    out = [PlannedStatement("create_partitions", table.schema, table.table, ", ".join(p.name for p in plan.create),
                            sql, f"{plan.ahead} partitions ahead, policy premake {policy.premake}", policy)
           for sql in plan.create_sql]
    out += [PlannedStatement("drop_partition", table.schema, table.table, p.name, sql,
                             f"ends {p.upper:%Y-%m-%d}, older than {policy.retention_days} days", policy)
            for p, sql in zip(plan.drop, plan.drop_sql)]
    return out


async def plan_live(conn: Connection, policies: Sequence[Mapping[str, Any]], now: datetime,
                    table: str | None = None) -> list[PlannedStatement]:
    """The DDL the policies call for now, read-only. With `table` ("schema.table"), only that table,
    refused unless information_schema shows it RANGE-partitioned on a date/time column."""
    t = _policies(policies)
    if table is not None:
        schema, _, name = table.partition(".")
        live = await load_table(conn.fetch, schema, name)
        return _statements(live, policy_for(live.name, t), now)
    snap = {"partitions": await conn.fetch(SQL[min(SQL)]), "columns": await conn.fetch(COLUMNS[min(COLUMNS)])}
    return [s for tb in tables_from(snap) for s in _statements(tb, policy_for(tb.name, t), now)]


async def apply(target: Target, statements: Sequence[PlannedStatement], lock_timeout_ms: int = 2000,
                now: datetime | None = None) -> list[Outcome]:
    """Run the statements one at a time on a writable session; stop a table at its first failure."""
    now = now or datetime.now(timezone.utc)
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
    except NotRangePartitioned as e:
        return Outcome(stmt, "failed", str(e))
    if stmt.sql not in plan_table(live, stmt.policy, now).statements:
        return Outcome(stmt, "skipped", "no longer needed: the live table already has it")
    try:
        await fetch(stmt.sql)
    except Exception as e:  # noqa: BLE001 - any server error is the statement's audited outcome
        return Outcome(stmt, "failed", str(e))
    return Outcome(stmt, "ok", f"{stmt.action} {stmt.partition} on {stmt.table}")
