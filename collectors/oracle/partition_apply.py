"""The admin side of Oracle partition maintenance: plan the live catalog, then apply it audited.

Same shape as the other engines (plan_live / apply, PlannedStatement / Outcome; the engine-neutral
pieces come from collectors.common.maintenance). Plain RANGE tables on a DATE/TIMESTAMP key
get ADD PARTITION (or SPLIT of the MAXVALUE partition) ahead; interval-partitioned tables need no
premake (Oracle creates partitions on insert) and get only retention: DROP PARTITIONS ... UPDATE
INDEXES, so global indexes stay usable. Before each statement apply re-reads DBA_PART_TABLES /
DBA_TAB_PARTITIONS, re-plans that table and runs the statement only if the fresh plan still has it,
so a second apply changes nothing. A table whose MAXVALUE partition already holds current rows
gets no SPLIT at a bound in the past: that would rewrite the rows under lock. With keep_table,
retention is CREATE TABLE ... FOR EXCHANGE, EXCHANGE PARTITION, DROP PARTITIONS (partitions.plan_keep);
the re-plan probes the partition and its archive table, and refuses the DROP of a partition that
still holds rows. Oracle commits DDL implicitly, so no lock spans that probe and the DROP: the
window is the time between two statements.

UNVERIFIED against a live Oracle: no server can run here. The plan is tested on recorded catalog
rows, every statement parses in sqlglot's oracle dialect (or matches the documented shape), and
apply is tested on a recorded-rows session and against a closed port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from collectors.common.maintenance import (
    APPLY_STATEMENT_TIMEOUT_MS,
    MAX_NEW_BOUNDS,
    MaintenanceSpec,
    NotRangePartitioned,
    Outcome,
    PlannedStatement,
    Policy,
    Replan,
    Session,
    dedupe,
    find_table,
    policy_from,
    run_replanned,
    table_glob,
)
from collectors.common.partition_maths import infer_step, next_bound
from collectors.engines.base import ConnectFailed, SessionLimits, Target
from collectors.oracle.partitions import (
    SQL,
    KeepFacts,
    RangeTable,
    archive_name,
    drop_sql,
    expired_partitions,
    keep_facts,
    plan_keep,
    premake_partitions,
    tables_from_rows,
)
from collectors.registry import register_maintenance

__all__ = ["NotRangePartitioned", "Outcome", "PlannedStatement", "apply", "apply_on", "plan_live"]

_WHAT = "a RANGE-partitioned table on a DATE/TIMESTAMP column"


class PartitionNotEmpty(RuntimeError):
    """keep_table: the partition to drop still holds rows, so it was not dropped."""


def table_statements(t: RangeTable, policy: Policy, now: datetime,
                     kept: Mapping[str, KeepFacts] | None = None) -> list[PlannedStatement]:
    ahead = max(0, sum(1 for b in t.bounds if b > now.replace(tzinfo=None)) - 1)
    why = f"premake {policy.premake}: {ahead} partition(s) ahead of now"
    planned = premake_partitions(t, now, policy.premake)[:MAX_NEW_BOUNDS]
    if planned and t.maxvalue and (t.maxvalue[2] or 0) > 0 and \
            next_bound(t.bounds[-1], infer_step(t.bounds)) <= now.replace(tzinfo=None):
        # Current rows sit in MAXVALUE, so a SPLIT at a bound in the past puts rows on both sides
        # and rewrites them under lock (no fast split): a DBA's call (the catchall_partition_rows
        # finding says how), as on PostgreSQL where a non-empty default blocks what it overlaps.
        planned = []
    out = [PlannedStatement("split_partition" if t.maxvalue else "add_partition", t.owner, t.table, name, sql,
                            why, policy) for name, sql in planned]
    if policy.retention_days is None:
        return out
    if policy.keep_table:
        return out + _keep_statements(t, policy, now, kept)
    for name in expired_partitions(t, now, policy.retention_days):
        why = f"retention {policy.retention_days} days: every row of {name} is older than that"
        out.append(PlannedStatement("drop_partition", t.owner, t.table, name, drop_sql(t, name), why, policy))
    return out


_KEEP_WHY = {"create_archive": "its rows will be kept in {archive}",
             "exchange_partition": "its rows move to {archive} (the segments swap; the archive is empty)",
             "drop_emptied_partition": "its rows are kept in {archive}; dropped only if a probe finds it empty"}


def _keep_statements(t: RangeTable, policy: Policy, now: datetime,
                     kept: Mapping[str, KeepFacts] | None) -> list[PlannedStatement]:
    steps, _ = plan_keep(t, now, policy.retention_days, kept)  # the refused ones: see the collector's finding
    return [PlannedStatement(action, t.owner, t.table, name, sql,
                             f"retention {policy.retention_days} days, keep_table: every row of {name} is older; "
                             + _KEEP_WHY[action].format(archive=f"{t.owner}.{archive_name(t, name)}"), policy)
            for action, name, sql in steps]


async def _facts(conn: Any, t: RangeTable, policy: Policy, now: datetime) -> dict[str, KeepFacts]:
    if policy.retention_days is None or not policy.keep_table:
        return {}
    return await keep_facts(conn, t, expired_partitions(t, now, policy.retention_days))


async def _planned(conn: Any, t: RangeTable, policy: Policy, now: datetime) -> list[PlannedStatement]:
    return table_statements(t, policy, now, await _facts(conn, t, policy, now))


async def _catalog(conn: Any) -> list[RangeTable]:
    return tables_from_rows(await conn.fetch(SQL))


async def plan_live(conn: Any, policies: Sequence[Mapping[str, Any]], now: datetime,
                    table: str | None = None) -> list[PlannedStatement]:
    """The DDL the policies call for now, read-only (one SELECT on the DBA_ views). With `table`
    ("OWNER.TABLE", any case), only that table, refused unless it is RANGE-partitioned on a
    DATE/TIMESTAMP column."""
    tables = await _catalog(conn)
    chosen = tables if table is None else [find_table(tables, table, _WHAT)]
    return dedupe([s for t in chosen for s in await _planned(conn, t, policy_from(t.name, policies), now)])


def _replanner(now: datetime) -> Replan:
    async def replan(session: Session, stmt: PlannedStatement) -> list[PlannedStatement]:
        t = find_table(await _catalog(session), stmt.table, _WHAT)
        facts = await _facts(session, t, stmt.policy, now)
        found = facts.get(stmt.partition)
        if stmt.action == "drop_emptied_partition" and found is not None and found.partition_has_rows:
            raise PartitionNotEmpty(f"partition {stmt.partition} of {t.name} still holds rows, so it was not dropped "
                                    "(keep_table: its rows must be exchanged into the archive table first)")
        return table_statements(t, stmt.policy, now, facts)
    return replan


async def apply_on(session: Session, statements: Sequence[PlannedStatement], now: datetime,
                   secret: str | None = None) -> list[Outcome]:
    """Run on an open writable session (see apply); separate so it can be tested without a server."""
    return await run_replanned(session, statements, _replanner(now), secret)


async def apply(target: Target, statements: Sequence[PlannedStatement], lock_timeout_ms: int = 2000,
                now: datetime | None = None) -> list[Outcome]:
    """Run the statements on a writable session of its own (ALTER SESSION SET DDL_LOCK_TIMEOUT;
    Oracle commits each DDL alone). Unverified against a live Oracle."""
    if not statements:
        return []
    try:
        from collectors.engines.oracle import (
            open_writable,  # python-oracledb is an optional extra
        )
    except ImportError as e:
        return [Outcome(s, "failed", f"the oracle driver is not installed ({e.name or e})") for s in statements]
    limits = SessionLimits(lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=APPLY_STATEMENT_TIMEOUT_MS)
    try:
        session = await open_writable(target, limits)
    except ConnectFailed as e:
        return [Outcome(s, "failed", str(e)) for s in statements]
    try:
        return await apply_on(session, statements, now or datetime.now(UTC), target.password)
    finally:
        await session.close()


# Oracle names fold case (unquoted ones are upper case), so a policy's table glob does too.
register_maintenance(MaintenanceSpec("oracle", plan_live, apply, table_glob(fold_case=True)))
