"""Partition maintenance (pg_partman's job, as plan -> apply): discovery, findings and apply.

The collector only reads the catalog (and counts rows in default partitions); the DDL comes
from the pure planner in partition_plan and runs only through apply(), on its own writable
connection, one statement per transaction under lock_timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from collectors.postgres.partition_plan import (
    INT_KEYS,
    TIME_KEYS,
    DefaultPartition,
    Partition,
    PartitionedTable,
    PartitionPolicy,
    PlannedStatement,
    TableAnalysis,
    analyse,
    plan,
    policy_for,
    quote_ident,
)
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, NodeRole, Result, Sample, Severity

__all__ = ["PartitionPolicy", "PlannedStatement", "plan", "discover", "SPEC"]

# pg_get_expr() prints bounds in the session's DateStyle/TimeZone; casting the literal back to
# the key type and through to_char gives one ISO form whatever the session settings are.
_NORMALIZE = """case when {v} is null or {v} in ('MINVALUE', 'MAXVALUE') then null
        when p.typname = 'timestamptz' then to_char(btrim({v}, '''')::timestamptz, 'YYYY-MM-DD"T"HH24:MI:SSOF')
        when p.typname = 'timestamp' then to_char(btrim({v}, '''')::timestamp, 'YYYY-MM-DD"T"HH24:MI:SS')
        when p.typname = 'date' then to_char(btrim({v}, '''')::date, 'YYYY-MM-DD')
        else btrim({v}, '''')::bigint::text end"""

DISCOVER_SQL = f"""
with p as (
  select c.oid, n.nspname, c.relname, a.attname, t.typname, pt.partdefid
  from pg_partitioned_table pt
  join pg_class c on c.oid = pt.partrelid
  join pg_namespace n on n.oid = c.relnamespace
  join pg_attribute a on a.attrelid = c.oid and a.attnum = pt.partattrs[0]
  join pg_type t on t.oid = a.atttypid
  where pt.partstrat = 'r' and pt.partnatts = 1
    and t.typname in ('timestamptz', 'timestamp', 'date', 'int2', 'int4', 'int8')
    and n.nspname not in ('pg_catalog', 'information_schema')
)
select p.oid::bigint as table_oid, p.nspname as schema, p.relname as table_name,
       p.attname as key_column, p.typname as key_type,
       sn.nspname as part_schema, s.relname as part_name, s.oid = p.partdefid as is_default,
       {_NORMALIZE.format(v='m[1]')} as lower,
       {_NORMALIZE.format(v='m[2]')} as upper
from p
left join pg_inherits i on i.inhparent = p.oid
left join pg_class s on s.oid = i.inhrelid
left join pg_namespace sn on sn.oid = s.relnamespace
left join lateral regexp_match(pg_get_expr(s.relpartbound, s.oid),
                               '^FOR VALUES FROM \\((.*)\\) TO \\((.*)\\)$') m on true
order by 2, 3, 9
"""

PARTMAN_SQL = """
select e.extnamespace::regnamespace::text as schema from pg_extension e where e.extname = 'pg_partman'
"""

THRESHOLDS: dict[str, Any] = {"partition_policies": []}


def _key_value(text: str | None, key_type: str) -> datetime | int | None:
    if text is None or text == "":
        return None
    return int(text) if key_type in INT_KEYS else datetime.fromisoformat(text)


def tables_from_rows(rows: Sequence[Mapping[str, Any]], server_version: int = 150000) -> list[PartitionedTable]:
    """Group the discovery rows into tables (default partitions without their row counts)."""
    grouped: dict[int, dict[str, Any]] = {}
    for r in rows:
        t = grouped.setdefault(r["table_oid"], {"row": r, "parts": [], "default": None})
        if r["part_name"] is None:
            continue
        if r["is_default"]:
            t["default"] = DefaultPartition(r["part_schema"], r["part_name"], 0)
        else:
            kt = r["key_type"]
            t["parts"].append(Partition(r["part_schema"], r["part_name"],
                                        _key_value(r["lower"], kt), _key_value(r["upper"], kt)))
    return [PartitionedTable(oid=oid, schema=g["row"]["schema"], name=g["row"]["table_name"],
                             key_column=g["row"]["key_column"], key_type=g["row"]["key_type"],
                             partitions=tuple(g["parts"]), default=g["default"], server_version=server_version)
            for oid, g in grouped.items()]


def _key_text(table: PartitionedTable, expr: str) -> str:
    fmt = {"timestamptz": 'YYYY-MM-DD"T"HH24:MI:SSOF', "timestamp": 'YYYY-MM-DD"T"HH24:MI:SS', "date": "YYYY-MM-DD"}
    if table.key_type in TIME_KEYS:
        return f"to_char({expr}, '{fmt[table.key_type]}')"
    return f"{expr}::text"


async def _default_rows(conn: Connection, table: PartitionedTable) -> DefaultPartition:
    """Count the default partition's rows and their key range (names come from the catalog, quoted)."""
    d, col = table.default, quote_ident(table.key_column)
    sql = (f"select count(*)::bigint as n, {_key_text(table, f'min({col})')} as lo, "
           f"{_key_text(table, f'max({col})')} as hi from only {quote_ident(d.schema)}.{quote_ident(d.name)}")
    row = (await conn.fetch(sql))[0]
    return DefaultPartition(d.schema, d.name, row["n"], _key_value(row["lo"], table.key_type),
                            _key_value(row["hi"], table.key_type))


async def _current_key(conn: Connection, table: PartitionedTable) -> int | None:
    """Largest key in the newest non-empty partition: looks at three partitions at most, never the whole table."""
    col = quote_ident(table.key_column)
    newest = sorted((p for p in table.partitions if p.lower is not None), key=lambda p: p.lower, reverse=True)
    for p in newest[:3]:
        rows = await conn.fetch(f"select max({col})::bigint as m from only {quote_ident(p.schema)}.{quote_ident(p.name)}")
        if rows and rows[0]["m"] is not None:
            return rows[0]["m"]
    return None


async def _partman_premake(conn: Connection) -> dict[str, int]:
    """schema.table -> premake for tables pg_partman maintains (its part_config is the truth for them)."""
    rows = await conn.fetch(PARTMAN_SQL)
    if not rows:
        return {}
    schema = quote_ident(rows[0]["schema"])
    config = await conn.fetch(f"select parent_table, premake from {schema}.part_config")
    return {r["parent_table"]: r["premake"] for r in config}


async def discover(conn: Connection) -> list[PartitionedTable]:
    """Every range-partitioned table on a time/integer key, with default-partition rows and pg_partman config."""
    tables = tables_from_rows(await conn.fetch(DISCOVER_SQL), conn.server_version)
    partman = await _partman_premake(conn)
    out = []
    for t in tables:
        changes: dict[str, Any] = {}
        if t.default is not None:
            changes["default"] = await _default_rows(conn, t)
        if t.key_type in INT_KEYS:
            changes["current_key"] = await _current_key(conn, t)
        if t.qualified in partman:
            changes["partman_premake"] = partman[t.qualified]
        out.append(replace(t, **changes))
    return out


def policies_from(ctx: Context) -> list[PartitionPolicy]:
    raw = ctx.thresholds.get("partition_policies") or []
    return [p if isinstance(p, PartitionPolicy) else PartitionPolicy.model_validate(p) for p in raw]


def findings_for(tables: list[PartitionedTable], policies: list[PartitionPolicy], now: datetime) -> Result:
    """Pure: the findings and samples for discovered tables under their policies."""
    result = Result()
    for t in tables:
        a = analyse(t, policy_for(t, policies), now)
        if a.step is not None:
            result.samples.append(Sample("partitions_ahead", float(a.ahead), t.qualified))
        for f in (_missing_future(a), _default_rows_finding(a), _retention_due(a)):
            if f is not None:
                result.findings.append(f)
    return result


def _missing_future(a: TableAnalysis) -> Finding | None:
    t = a.table
    premake = t.partman_premake if t.managed_by_partman else a.policy.premake
    if a.step is None or not (a.to_create or a.blocked_by_default):
        return None
    # Without a default partition, a row past the last bound is an insert error in production.
    severity = Severity.critical if a.ahead == 0 and t.default is None else Severity.warning
    if t.managed_by_partman:
        rec = (f"pg_partman manages {t.qualified} (premake {premake}); dbfleet does not alter it. Check that "
               "partman.run_maintenance() runs (pg_partman_bgw or cron) and look at its log.")
    else:
        rec = ("Run `dbfleet partitions apply` (or the planned CREATE TABLE ... PARTITION OF statements). "
               "Each CREATE takes an ACCESS EXCLUSIVE lock on the parent briefly"
               + (" and scans the default partition to prove no row belongs to the new range." if t.default else "."))
    return Finding(
        check="missing_future_partitions", object=t.qualified, severity=severity,
        title=f"{t.qualified} has {a.ahead} partition(s) ahead of now; policy wants {premake}",
        details={"partitions_ahead": a.ahead, "premake": premake, "interval": a.step.describe(),
                 "last_upper_bound": str(max(p.upper for p in t.partitions if p.upper is not None)),
                 "to_create": [f"[{lo}, {hi})" for lo, hi in a.to_create],
                 "blocked_by_default_rows": [f"[{lo}, {hi})" for lo, hi in a.blocked_by_default],
                 "managed_by": "pg_partman" if t.managed_by_partman else "dbfleet",
                 "sql": _BOUNDS_SQL.format(table=t.qualified)},
        recommendation=rec,
    )


_BOUNDS_SQL = ("select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i join pg_class c "
               "on c.oid = i.inhrelid where i.inhparent = '{table}'::regclass order by 1")


def _default_rows_finding(a: TableAnalysis) -> Finding | None:
    t, d = a.table, a.table.default
    if d is None or not d.rows:
        return None
    return Finding(
        check="default_partition_rows", object=d.qualified, severity=Severity.warning,
        title=f"{d.rows:,} row(s) in default partition {d.qualified} ({t.key_column} {d.min_key} .. {d.max_key})",
        details={"rows": d.rows, "min_key": str(d.min_key), "max_key": str(d.max_key), "table": t.qualified,
                 "blocked_ranges": [f"[{lo}, {hi})" for lo, hi in a.blocked_by_default],
                 "sql": f"select min({t.key_column}), max({t.key_column}), count(*) from only {d.qualified}"},
        recommendation=(
            "Rows in the default partition make CREATE TABLE ... PARTITION OF fail for any range that "
            "contains them (\"updated partition constraint for default partition would be violated\", "
            "pg_partman#510). Move them: BEGIN; ALTER TABLE parent DETACH PARTITION default; create the "
            "covering partition(s); INSERT INTO parent SELECT * FROM default; DELETE FROM default; "
            "ALTER TABLE parent ATTACH PARTITION default DEFAULT; COMMIT. The ATTACH scans the default "
            "partition under lock: do it in a quiet window."),
    )


def _retention_due(a: TableAnalysis) -> Finding | None:
    if not a.retention_due:
        return None
    t = a.table
    action = "detached (kept as tables)" if a.policy.keep_table else "detached and dropped"
    return Finding(
        check="partition_retention_due", object=t.qualified, severity=Severity.info,
        title=f"{len(a.retention_due)} partition(s) of {t.qualified} are past the {a.policy.retention} retention",
        details={"partitions": [p.qualified for p in a.retention_due], "retention": str(a.policy.retention),
                 "keep_table": a.policy.keep_table, "upper_bounds": [str(p.upper) for p in a.retention_due],
                 "sql": _BOUNDS_SQL.format(table=t.qualified)},
        recommendation=f"Run `dbfleet partitions apply`: the partitions are {action}. DROP TABLE is not "
                       "reversible; set keep_table in the policy to keep the data as plain tables.",
    )


class NotPartitioned(ValueError):
    """The named table is not a range-partitioned table dbfleet can plan for; nothing is interpolated."""


async def plan_live(conn: Connection, policies: list[PartitionPolicy], now: datetime,
                    table: str | None = None) -> list[PlannedStatement]:
    """Discover and plan; with `table` (schema.table), only that table, refused unless the catalog
    shows it is a range-partitioned table on a time or integer key."""
    tables = await discover(conn)
    if table is not None:
        oid = await _partitioned_oid(conn, table)
        tables = [t for t in tables if t.oid == oid]
        if not tables:
            raise NotPartitioned(f"{table!r} is not range-partitioned on a time or integer column")
    return plan(tables, policies, now)


async def _partitioned_oid(conn: Connection, table: str) -> int:
    # to_regclass parses the name server-side as a bound parameter: no quoting by hand.
    try:
        rows = await conn.fetch(
            "select pt.partrelid::bigint as oid from pg_partitioned_table pt where pt.partrelid = to_regclass($1)", table)
    except Exception as e:  # invalid name syntax: the driver's error class differs by adapter
        raise NotPartitioned(f"{table!r} is not a valid table name: {e}") from None
    if not rows:
        raise NotPartitioned(f"{table!r} is not a partitioned table in this database")
    return rows[0]["oid"]


async def run(conn: Connection, ctx: Context) -> Result:
    return findings_for(await discover(conn), policies_from(ctx), ctx.now)


SPEC = register(CollectorSpec(
    name="partitions",
    engine="postgres",
    description="Range partitions: premade future partitions, rows in default partitions, retention due",
    sql={110000: DISCOVER_SQL},
    run=run,
    role=NodeRole.primary,
    interval_s=3600,
    timeout_s=60,
    thresholds=THRESHOLDS,
))
