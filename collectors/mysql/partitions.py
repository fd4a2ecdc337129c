"""Partition maintenance findings for time-based RANGE partitioning (the plan/apply code is in
partition_plan): partitions missing ahead, rows in the MAXVALUE catch-all, retention due."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.partition_maths import keep_table, retention_days
from collectors.mysql._common import (
    MYSQL_57,
    SYSTEM_SCHEMAS_SQL,
    as_int,
    qualified,
    quote_ident,
    scoped_snapshot,
    snapshot_of,
)
from collectors.mysql.partition_plan import (
    COLUMNS_SQL,
    PARTITIONS_SQL,
    KeepFacts,
    Plan,
    Policy,
    RangeTable,
    keep_facts,
    parse_table,
    plan_table,
)
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Severity

_RANGE_TABLES = ("(TABLE_SCHEMA, TABLE_NAME) IN (SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.PARTITIONS "
                 "WHERE PARTITION_METHOD IN ('RANGE', 'RANGE COLUMNS'))")
SQL = {MYSQL_57: PARTITIONS_SQL.format(where=f"TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS_SQL} "
                                              "AND PARTITION_METHOD IN ('RANGE', 'RANGE COLUMNS')")}
COLUMNS = {MYSQL_57: COLUMNS_SQL.format(where=_RANGE_TABLES)}
# How many catch-all rows we read to show their range: enough to show it, bounded in cost.
CATCHALL_SAMPLE = 100_000

# pg_partman's default premake is 4; retention is off unless a policy sets it. Policies look like
# [{"table": "sales.events_*", "premake": 6, "retention_days": 365}], first match wins.
# `partition_policies` is the same config as PostgreSQL's: table glob, premake, and retention as
# "90 days" / "3 months" (or retention_days as a number), and keep_table (keep the rows in an
# archive table instead of dropping them).
THRESHOLDS: dict[str, Any] = {"premake": 4, "retention_days": None, "partition_policies": []}


def policy_for(name: str, t: Mapping[str, Any]) -> Policy:
    chosen: Mapping[str, Any] = {}
    for p in t.get("partition_policies") or []:
        if fnmatch.fnmatchcase(name, p.get("table", "")):
            chosen = p
            break
    retention = retention_days(chosen) if chosen else t.get("retention_days")
    return Policy(premake=int(chosen.get("premake", t.get("premake", 4))),
                  retention_days=None if retention is None else int(retention),
                  keep_table=keep_table(chosen if chosen else t))


def tables_from(snap: Mapping[str, Any]) -> list[RangeTable]:
    by_table: dict[tuple[str, str], list] = defaultdict(list)
    for row in snap.get("partitions", []):
        by_table[(row["table_schema"], row["table_name"])].append(row)
    types: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for c in snap.get("columns", []):
        types[(c["table_schema"], c["table_name"])][c["column_name"]] = c["data_type"]
    parsed = (parse_table(rows, types[key]) for key, rows in sorted(by_table.items()))
    return [t for t in parsed if t is not None]


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    snap = snapshot_of(rows)
    if snap is None:
        return result
    snap = scoped_snapshot(snap, ctx)
    t = ctx.thresholds
    catchall = {(r["table_schema"], r["table_name"]): r for r in snap.get("catchall", [])}
    kept = _kept(snap.get("keep", []))
    for table in tables_from(snap):
        policy = policy_for(table.name, t)
        plan = plan_table(table, policy, ctx.now, kept.get((table.schema, table.table)))
        if plan.create:
            result.findings.append(_missing_finding(plan, policy.premake, ctx))
        if plan.retention or plan.refused:
            result.findings.append(_retention_finding(plan, policy))
        probe = catchall.get((table.schema, table.table))
        if probe is not None and as_int(probe["rows"]) > 0:
            result.findings.append(_catchall_finding(table, probe))
    return result


_KEEP_FIELDS = ("partition_has_rows", "archive_exists", "archive_partitioned", "archive_has_rows")


def _kept(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, KeepFacts]]:
    """The snapshot's keep_table probes, per table and partition."""
    out: dict[tuple[str, str], dict[str, KeepFacts]] = defaultdict(dict)
    for r in rows:
        out[(r["table_schema"], r["table_name"])][r["partition_name"]] = KeepFacts(*(bool(r[k]) for k in _KEEP_FIELDS))
    return out


def _ddl(statements: Sequence[str]) -> str:
    return "".join(f"{sql};\n" for sql in statements).rstrip("\n")


def _missing_finding(plan: Plan, premake: int, ctx: Context) -> Finding:
    table = plan.table
    last = table.bounded[-1].upper
    uncovered = last <= ctx.now.replace(tzinfo=None)
    # Without a catch-all, an INSERT past the last bound fails outright ("Table has no partition
    # for value ..."); with one, rows pile into it and make the next REORGANIZE expensive.
    severity = Severity.critical if uncovered and table.catchall is None else Severity.warning
    risk = ("REORGANIZE PARTITION copies every row of the catch-all into the new partitions while "
            "holding a lock on the table; keep the catch-all empty so this stays instant."
            if table.catchall is not None else "ADD PARTITION at the end of a RANGE table only changes metadata.")
    return Finding(
        check="missing_future_partitions", object=table.name, severity=severity,
        title=f"{table.name} has {plan.ahead} {plan.interval.label()} partitions ahead (policy: {premake})"
              + (f"; the last one ends {last:%Y-%m-%d}, already past" if uncovered else ""),
        details={"partitions_ahead": plan.ahead, "premake": premake, "interval": plan.interval.label(),
                 "last_bound": last.isoformat(sep=" "), "partition_key": f"{table.func}({table.column})",
                 "new_partitions": [p.name for p in plan.create], "ddl": _ddl(plan.create_sql),
                 "sql": _partitions_sql(table)},
        recommendation=f"{_ddl(plan.create_sql)}\n{risk}",
    )


def _retention_finding(plan: Plan, policy: Policy) -> Finding:
    table = plan.table
    names = [p.name for p in plan.drop] + list(plan.refused)
    ddl = _ddl(plan.retention_sql)
    if not policy.keep_table:
        advice = ("DROP PARTITION deletes those rows for good and is instant; take a backup of them "
                  "first if anyone may ask for them.")
    else:
        advice = ("keep_table: each partition's rows are kept in <table>_<partition> (EXCHANGE PARTITION swaps "
                  "the data, metadata only); only the emptied partition is dropped, after a check that it is empty."
                  + "".join(f"\nNot done: {reason}" for reason in plan.refused.values()))
    return Finding(
        check="partition_retention_due", object=table.name, severity=Severity.info,
        title=f"{len(names)} partition(s) of {table.name} are older than the {policy.retention_days}-day retention",
        details={"partitions": names, "retention_days": policy.retention_days, "keep_table": policy.keep_table,
                 "ddl": ddl, "refused": dict(plan.refused), "sql": _partitions_sql(table)},
        recommendation=f"{ddl}\n{advice}".lstrip("\n"),
    )


def _catchall_finding(table: RangeTable, probe: Mapping[str, Any]) -> Finding:
    part = table.catchall
    n = as_int(probe["rows"])
    shown = f"at least {n:,}" if n >= CATCHALL_SAMPLE else f"{n:,}"
    return Finding(
        check="catchall_partition_rows", object=table.name, severity=Severity.warning,
        title=f"{shown} rows of {table.name} landed in its MAXVALUE partition {part.name}",
        details={"partition": part.name, "rows": n, "sampled_up_to": CATCHALL_SAMPLE,
                 "min_value": str(probe.get("min_value")), "max_value": str(probe.get("max_value")),
                 "sql": f"SELECT MIN({quote_ident(table.column)}), MAX({quote_ident(table.column)}), COUNT(*) "
                        f"FROM {qualified(table.schema, table.table)} PARTITION ({quote_ident(part.name)})"},
        recommendation="Create partitions covering these rows' range (the missing_future_partitions "
                       "DDL does it by REORGANIZE PARTITION, moving the rows out). Until then every "
                       "new bound must be split out of the catch-all, which copies its rows under lock.",
    )


def _partitions_sql(table: RangeTable) -> str:
    return ("SELECT PARTITION_NAME, PARTITION_DESCRIPTION, TABLE_ROWS FROM information_schema.PARTITIONS "
            f"WHERE TABLE_SCHEMA = '{table.schema}' AND TABLE_NAME = '{table.table}'")


async def run(conn: Connection, ctx: Context) -> Result:
    snap: dict[str, Any] = {"partitions": await conn.fetch(SQL[MYSQL_57]), "columns": [], "catchall": [], "keep": []}
    if snap["partitions"]:
        snap["columns"] = await conn.fetch(COLUMNS[MYSQL_57])
    snap = scoped_snapshot(snap, ctx)  # probe only this entry's schemas
    t = ctx.thresholds
    for table in tables_from(snap):
        if table.catchall is not None:
            snap["catchall"].append(await _probe_catchall(conn, table))
        snap["keep"] += await _probe_kept(conn, table, policy_for(table.name, t), ctx)
    return transform([snap], ctx)


async def _probe_kept(conn: Connection, table: RangeTable, policy: Policy, ctx: Context) -> list[dict[str, Any]]:
    """keep_table's facts for the partitions past retention, so the finding says what apply would do."""
    due = plan_table(table, policy, ctx.now).drop if policy.keep_table else []
    facts = await keep_facts(conn.fetch, table, due)
    return [{"table_schema": table.schema, "table_name": table.table, "partition_name": name,
             **{k: getattr(f, k) for k in _KEEP_FIELDS}} for name, f in facts.items()]


async def _probe_catchall(conn: Connection, table: RangeTable) -> dict[str, Any]:
    """Count (up to a cap) and range of the rows in the MAXVALUE partition; identifiers come from
    information_schema and are backtick-quoted."""
    col = quote_ident(table.column)
    [row] = await conn.fetch(
        f"SELECT COUNT(*) AS n, MIN(v) AS lo, MAX(v) AS hi FROM (SELECT {col} AS v "
        f"FROM {qualified(table.schema, table.table)} PARTITION ({quote_ident(table.catchall.name)}) "
        f"LIMIT {CATCHALL_SAMPLE}) x")
    return {"table_schema": table.schema, "table_name": table.table, "rows": as_int(row["n"]),
            "min_value": row["lo"], "max_value": row["hi"]}


SPEC = register(CollectorSpec(
    name="partitions",
    engine="mysql",
    description="Time-based RANGE partitions: missing ahead, rows in the catch-all, retention due",
    sql=SQL,
    run=run,
    transform=transform,
    interval_s=3600,
    timeout_s=60,
    thresholds=THRESHOLDS,
    needs=('partition_policies', 'schemas'),
))
