"""The admin side of SQL Server partition maintenance: plan the live catalog, then apply it audited.

Same shape as the PostgreSQL and MySQL engines (plan_live / apply, PlannedStatement / Outcome) so
that app/partitions.py drives all of them. Premake is ALTER PARTITION SCHEME ... NEXT USED (on
every scheme of the function) + ALTER PARTITION FUNCTION ... SPLIT RANGE; retention is SWITCH of
partition 1 to `<table>_dbfleet_staging` + TRUNCATE + MERGE RANGE, or with keep_table SWITCH into
the archive table `<table>_before_<yyyymmdd>` the DBA created (kept) + MERGE RANGE, so no statement
of a keep_table plan can remove a row (MERGE keeps rows, SWITCH needs an empty target). apply
never runs text it was handed blindly: before each statement it re-reads the catalog, re-plans
that table with the statement's policy, and runs the statement only if the fresh plan still
contains it, so a second apply changes nothing. The generic pieces (Policy, Outcome, run_replanned)
are collectors.common.maintenance's. A boundary in the past of a table whose open-ended last partition
holds rows is not planned: that SPLIT would move rows under a schema-modification lock.

UNVERIFIED against a live SQL Server: no server can run here. The plan is tested on recorded
catalog rows, every statement parses as T-SQL, and apply is tested on a recorded-rows session and
against a closed port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from collectors.common.maintenance import (
    APPLY_STATEMENT_TIMEOUT_MS,
    MAX_NEW_BOUNDS,
    BadPolicy,
    MaintenanceSpec,
    NotRangePartitioned,
    Outcome,
    PlannedStatement,
    PlanRefused,
    Policy,
    Replan,
    Session,
    dedupe,
    find_table,
    policy_from,
    run_replanned,
    table_glob,
)
from collectors.common.rows import fetch_tagged
from collectors.engines.base import ConnectFailed, SessionLimits, Target
from collectors.registry import register_maintenance
from collectors.sqlserver.partitions import (
    QUERIES,
    PartitionedTable,
    archive_table,
    expired_bounds,
    next_used_sql,
    plan_archive,
    premake_bounds,
    retention_sql,
    split_sql,
    staging_table,
    tables_from_rows,
)

__all__ = ["BadPolicy", "NotRangePartitioned", "Outcome", "PlanRefused", "PlannedStatement", "apply", "apply_on",
           "plan_live"]


# --- SQL Server -------------------------------------------------------------------------------

def table_statements(t: PartitionedTable, tables: Sequence[PartitionedTable], policy: Policy,
                     now: datetime) -> list[PlannedStatement]:
    """The plan for one table; `tables` is the whole catalog, for the schemes sharing its function."""
    return _premake(t, tables, policy, now) + _retention(t, policy, now)


def _premake(t: PartitionedTable, tables: Sequence[PartitionedTable], policy: Policy,
             now: datetime) -> list[PlannedStatement]:
    # SPLIT needs a NEXT USED filegroup on every scheme built on the function, or it fails.
    schemes = {o.scheme: o.filegroup for o in tables if o.function == t.function}
    ahead = sum(1 for b in t.bounds if b > now.replace(tzinfo=None))
    why = f"premake {policy.premake}: {ahead} partition(s) ahead of now on function {t.function}"
    bounds = premake_bounds(t, now, policy.premake)[:MAX_NEW_BOUNDS]
    if bounds and bounds[0] <= now.replace(tzinfo=None) and t.rows.get(len(t.bounds) + 1, 0):
        # Rows already land in the open-ended last partition, so a SPLIT at a boundary in the past
        # moves them while holding a schema-modification lock on the table: that is a DBA's call
        # (the catchall_partition_rows finding says how), never an automatic one, as on PostgreSQL
        # where a default partition holding rows blocks the partitions it overlaps.
        return []
    out = []
    for bound in bounds:
        part = bound.isoformat()
        out += [PlannedStatement("next_used", t.schema, t.table, part, next_used_sql(s, fg), why, policy)
                for s, fg in sorted(schemes.items())]
        out.append(PlannedStatement("split_range", t.schema, t.table, part, split_sql(t, bound), why, policy))
    return out


def _retention(t: PartitionedTable, policy: Policy, now: datetime) -> list[PlannedStatement]:
    if policy.retention_days is None or t.tables_on_function > 1:
        return []
    if policy.keep_table:
        return _archive_retention(t, policy, now)
    actions = ("switch_out", "truncate_staging", "merge_range")
    out = []
    for bound in expired_bounds(t, now, policy.retention_days):
        why = (f"retention {policy.retention_days} days: partition 1 holds only rows before {bound:%Y-%m-%d}; "
               f"needs {staging_table(t)} (empty, same columns, indexes and filegroup)")
        out += [PlannedStatement(a, t.schema, t.table, bound.isoformat(), sql, why, policy)
                for a, sql in zip(actions, retention_sql(t, bound))]
    return out


def _archive_retention(t: PartitionedTable, policy: Policy, now: datetime) -> list[PlannedStatement]:
    """keep_table: SWITCH into the archive table the DBA created (kept, never truncated), then MERGE.
    Where that table is missing or not empty, nothing more is planned (the finding says which)."""
    out = []
    for action, bound, sql in plan_archive(t, now, policy.retention_days).steps:
        kept = (f"they move to {archive_table(t, bound)} and are kept" if action == "switch_to_archive"
                else "it is empty now, so merging its boundary removes no row")
        why = (f"retention {policy.retention_days} days, keep_table: partition 1 holds only rows before "
               f"{bound:%Y-%m-%d}; {kept}")
        out.append(PlannedStatement(action, t.schema, t.table, bound.isoformat(), sql, why, policy))
    return out


async def _catalog(conn: Any) -> list[PartitionedTable]:
    return tables_from_rows(await fetch_tagged(conn, QUERIES))


_WHAT = "a table on a date-keyed RANGE partition function"


async def plan_live(conn: Any, policies: Sequence[Mapping[str, Any]], now: datetime,
                    table: str | None = None) -> list[PlannedStatement]:
    """The DDL the policies call for now, read-only (SELECTs on sys.partition_* only). With
    `table` ("schema.table"), only that table, refused unless the catalog shows it partitioned on
    a date/time RANGE function."""
    tables = await _catalog(conn)
    chosen = tables if table is None else [find_table(tables, table, _WHAT)]
    return dedupe([s for t in chosen for s in table_statements(t, tables, policy_from(t.name, policies), now)])


def _replanner(now: datetime) -> Replan:
    async def replan(session: Session, stmt: PlannedStatement) -> list[PlannedStatement]:
        tables = await _catalog(session)
        return table_statements(find_table(tables, stmt.table, _WHAT), tables, stmt.policy, now)
    return replan


async def apply_on(session: Session, statements: Sequence[PlannedStatement], now: datetime,
                   secret: str | None = None) -> list[Outcome]:
    """Run on an open writable session (see apply); separate so it can be tested without a server."""
    return await run_replanned(session, statements, _replanner(now), secret)


async def apply(target: Target, statements: Sequence[PlannedStatement], lock_timeout_ms: int = 2000,
                now: datetime | None = None) -> list[Outcome]:
    """Run the statements on a writable session of its own (SET LOCK_TIMEOUT, SET DEADLOCK_PRIORITY
    LOW, autocommit: each statement commits alone). Unverified against a live SQL Server."""
    if not statements:
        return []
    try:
        from collectors.engines.sqlserver import (
            open_writable,  # the ODBC driver is an optional extra
        )
    except ImportError as e:
        return [Outcome(s, "failed", f"the sqlserver driver is not installed ({e.name or e})") for s in statements]
    limits = SessionLimits(lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=APPLY_STATEMENT_TIMEOUT_MS)
    try:
        session = await open_writable(target, limits)
    except ConnectFailed as e:
        return [Outcome(s, "failed", str(e)) for s in statements]
    try:
        return await apply_on(session, statements, now or datetime.now(UTC), target.password)
    finally:
        await session.close()


# SQL Server names fold case, so a policy's table glob does too.
register_maintenance(MaintenanceSpec("sqlserver", plan_live, apply, table_glob(fold_case=True)))
