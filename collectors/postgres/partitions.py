"""Partition maintenance (pg_partman's job, as plan -> apply): discovery, findings and apply.

The collector only reads the catalog (and probes default partitions: an exact count only when a
LIMIT probe shows they are small, pg_class.reltuples otherwise); the DDL comes
from the pure planner in partition_plan and runs only through apply(), on its own writable
connection, one statement per transaction under lock_timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, tzinfo
from typing import Any

from collectors.common.maintenance import PlanRefused
from collectors.postgres.partition_plan import (
    INT_KEYS,
    MAX_NEW_PER_TABLE,
    TIME_KEYS,
    DefaultPartition,
    Partition,
    PartitionedTable,
    PartitionPolicy,
    PlannedStatement,
    TableAnalysis,
    analyse,
    bound_text,
    plan,
    policy_for,
    quote_ident,
    zone_named,
)
from collectors.registry import register
from collectors.spec import (
    CollectorSpec,
    Connection,
    Context,
    Finding,
    NodeRole,
    Result,
    Sample,
    Severity,
)

__all__ = ["SPEC", "PartitionPolicy", "PlannedStatement", "discover", "plan"]

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
       {_NORMALIZE.format(v='m[2]')} as upper,
       s.reltuples::float8 as reltuples, current_setting('TimeZone') as time_zone,
       (select e.extnamespace::regnamespace::text from pg_extension e where e.extname = 'pg_partman')
         as partman_schema
from p
left join pg_inherits i on i.inhparent = p.oid
left join pg_class s on s.oid = i.inhrelid
left join pg_namespace sn on sn.oid = s.relnamespace
-- relid 0: bounds hold only constants, and with a relid pg_get_expr opens the partition, waiting
-- behind any ACCESS EXCLUSIVE lock on it (an ALTER, a stuck DETACH) until lock_timeout fails the run.
left join lateral regexp_match(pg_get_expr(s.relpartbound, 0),
                               '^FOR VALUES FROM \\((.*)\\) TO \\((.*)\\)$') m on true
order by 2, 3, 9
"""

# A default partition is counted exactly only below this many rows: reading 10,000 rows takes a
# few milliseconds, while count(*) on a default that collected millions would run into the
# session's statement_timeout and lose the whole run. Above it, pg_class.reltuples is the number.
EXACT_COUNT_MAX_ROWS = 10_000

THRESHOLDS: dict[str, Any] = {"partition_policies": [], "default_partition_exact_count_max_rows": EXACT_COUNT_MAX_ROWS}


def _key_value(text: str | None, key_type: str, zone: tzinfo | None = None) -> datetime | int | None:
    if text is None or text == "":
        return None
    if key_type in INT_KEYS:
        return int(text)
    value = datetime.fromisoformat(text)
    # In the session's zone rather than a fixed offset, so steps from it cross DST changes as the server does.
    return value.astimezone(zone) if zone is not None and value.tzinfo is not None else value


def _zone_of(rows: Sequence[Mapping[str, Any]]) -> str:
    """The session TimeZone the rows were printed in, if Python's zone of that name prints them alike."""
    name = next((r.get("time_zone") or "" for r in rows), "")
    zone = zone_named(name)
    stamps = [datetime.fromisoformat(r[k]) for r in rows if r["key_type"] == "timestamptz"
              for k in ("lower", "upper") if r.get(k)]
    if zone is None or any(v.utcoffset() != v.astimezone(zone).utcoffset() for v in stamps):
        return ""
    return name


def tables_from_rows(rows: Sequence[Mapping[str, Any]], server_version: int = 150000) -> list[PartitionedTable]:
    """Group the discovery rows into tables (default partitions without their row counts)."""
    time_zone = _zone_of(rows)
    zone = zone_named(time_zone)
    grouped: dict[int, dict[str, Any]] = {}
    for r in rows:
        t = grouped.setdefault(r["table_oid"], {"row": r, "parts": [], "default": None})
        if r["part_name"] is None:
            continue
        if r["is_default"]:
            t["default"] = DefaultPartition(r["part_schema"], r["part_name"], 0, reltuples=r.get("reltuples") or -1.0)
        else:
            kt = r["key_type"]
            t["parts"].append(Partition(r["part_schema"], r["part_name"],
                                        _key_value(r["lower"], kt, zone), _key_value(r["upper"], kt, zone)))
    return [PartitionedTable(oid=oid, schema=g["row"]["schema"], name=g["row"]["table_name"],
                             key_column=g["row"]["key_column"], key_type=g["row"]["key_type"],
                             partitions=tuple(g["parts"]), default=g["default"], server_version=server_version,
                             time_zone=time_zone)
            for oid, g in grouped.items()]


def _key_text(table: PartitionedTable, expr: str) -> str:
    fmt = {"timestamptz": 'YYYY-MM-DD"T"HH24:MI:SSOF', "timestamp": 'YYYY-MM-DD"T"HH24:MI:SS', "date": "YYYY-MM-DD"}
    if table.key_type in TIME_KEYS:
        return f"to_char({expr}, '{fmt[table.key_type]}')"
    return f"{expr}::text"


async def _default_rows(conn: Connection, table: PartitionedTable, exact_max: int) -> DefaultPartition:
    """The default's rows and key range from at most `exact_max` rows: exact when it holds fewer,
    else pg_class.reltuples (or "at least exact_max" if never analyzed) and no key range."""
    d, col = table.default, quote_ident(table.key_column)
    sql = (f"select count(*)::bigint as n, {_key_text(table, f'min({col})')} as lo, "
           f"{_key_text(table, f'max({col})')} as hi "
           f"from (select {col} from only {quote_ident(d.schema)}.{quote_ident(d.name)} limit {int(exact_max)}) s")
    row = (await conn.fetch(sql))[0]
    if row["n"] < exact_max:
        zone = table.session_zone
        return replace(d, rows=row["n"], min_key=_key_value(row["lo"], table.key_type, zone),
                       max_key=_key_value(row["hi"], table.key_type, zone))
    return replace(d, rows=max(row["n"], int(d.reltuples)), estimated=True)


def _sql_error(e: Exception) -> str:
    """'LockNotAvailableError: canceling statement due to lock timeout' for a server error, '' otherwise."""
    return f"{type(e).__name__}: {e}" if getattr(e, "sqlstate", None) else ""


async def _current_key(conn: Connection, table: PartitionedTable) -> int | None:
    """Largest key in the newest non-empty partition: looks at three partitions at most, never the whole table."""
    col = quote_ident(table.key_column)
    newest = sorted((p for p in table.partitions if p.lower is not None), key=lambda p: p.lower, reverse=True)
    for p in newest[:3]:
        rows = await conn.fetch(f"select max({col})::bigint as m from only {quote_ident(p.schema)}.{quote_ident(p.name)}")
        if rows and rows[0]["m"] is not None:
            return rows[0]["m"]
    return None


async def _partman_premake(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """schema.table -> premake for tables pg_partman maintains (its part_config is the truth for them).

    The discovery rows say where pg_partman lives (a column of DISCOVER_SQL, not a statement of its own)."""
    if not rows or not rows[0].get("partman_schema"):
        return {}
    schema = quote_ident(rows[0]["partman_schema"])
    config = await conn.fetch(f"select parent_table, premake from {schema}.part_config")
    return {r["parent_table"]: r["premake"] for r in config}


async def discover(conn: Connection, exact_count_max_rows: int = EXACT_COUNT_MAX_ROWS) -> list[PartitionedTable]:
    """Every range-partitioned table on a time/integer key, with default-partition rows and pg_partman config."""
    rows = await conn.fetch(DISCOVER_SQL)
    tables = tables_from_rows(rows, conn.server_version)
    partman = await _partman_premake(conn, rows)
    out = []
    for t in tables:
        t = await _read_table_rows(conn, t, exact_count_max_rows)
        out.append(replace(t, partman_premake=partman[t.qualified]) if t.qualified in partman else t)
    return out


async def _read_table_rows(conn: Connection, t: PartitionedTable, exact_max: int) -> PartitionedTable:
    """Default-partition rows and the current integer key; a timeout here is this table's problem only."""
    changes: dict[str, Any] = {}
    try:
        if t.default is not None:
            changes["default"] = await _default_rows(conn, t, exact_max)
        if t.key_type in INT_KEYS:
            changes["current_key"] = await _current_key(conn, t)
    except Exception as e:
        if not (problem := _sql_error(e)):
            raise  # a lost connection ends the run; a lock or statement timeout ends only this table's reads
        changes["problem"] = problem
        if t.default is not None and "default" not in changes:
            estimate = int(t.default.reltuples)
            changes["default"] = replace(t.default, rows=estimate if estimate > 0 else None, estimated=True)
    return replace(t, **changes)


_RANGE_PROBE_SQL = ("select exists(select 1 from only {default} where {col} >= $1::text::{typ} "
                    "and {col} < $2::text::{typ}) as has_rows")


async def probe_default_ranges(conn: Connection, tables: list[PartitionedTable], policies: list[PartitionPolicy],
                               now: datetime) -> list[PartitionedTable]:
    """For defaults whose key range was not read, ask per planned range whether it holds rows."""
    return [await _probe_ranges(conn, t, policy_for(t, policies), now) if _needs_range_probes(t) else t
            for t in tables]


def _needs_range_probes(t: PartitionedTable) -> bool:
    d = t.default
    return d is not None and not t.managed_by_partman and d.rows != 0 and d.min_key is None


async def _probe_ranges(conn: Connection, t: PartitionedTable, policy: PartitionPolicy, now: datetime) -> PartitionedTable:
    """Probe the ranges the planner would create until it plans none unprobed: a blocked range
    makes it plan one more. After the first failed probe the rest count as holding rows, unasked."""
    probes: dict[tuple[Any, Any], bool] = {}
    for _ in range(MAX_NEW_PER_TABLE + 1):
        t = replace(t, default=replace(t.default, range_probes=tuple((lo, hi, v) for (lo, hi), v in probes.items())))
        todo = [r for r in analyse(t, policy, now).to_create if r not in probes]
        if not todo:
            break
        for lower, upper in todo:
            if t.problem:
                probes[(lower, upper)] = True  # unknown: do not plan a CREATE that may fail or scan under lock
                continue
            try:
                probes[(lower, upper)] = await _range_has_rows(conn, t, lower, upper)
            except Exception as e:
                if not (problem := _sql_error(e)):
                    raise
                t, probes[(lower, upper)] = replace(t, problem=problem), True
    return t


async def _range_has_rows(conn: Connection, t: PartitionedTable, lower: Any, upper: Any) -> bool:
    # Stops at the first row; with an index on the key (one on the parent is) it reads a page or two.
    sql = _RANGE_PROBE_SQL.format(default=f"{quote_ident(t.default.schema)}.{quote_ident(t.default.name)}",
                                  col=quote_ident(t.key_column), typ=t.key_type)
    rows = await conn.fetch(sql, bound_text(lower, t.key_type), bound_text(upper, t.key_type))
    return bool(rows[0]["has_rows"])


def policies_from(ctx: Context) -> list[PartitionPolicy]:
    raw = ctx.thresholds.get("partition_policies") or []
    return [p if isinstance(p, PartitionPolicy) else PartitionPolicy.model_validate(p) for p in raw]


def exact_count_max_rows(ctx: Context) -> int:
    n = int(ctx.thresholds.get("default_partition_exact_count_max_rows") or EXACT_COUNT_MAX_ROWS)
    if n < 1:
        raise ValueError("default_partition_exact_count_max_rows must be at least 1")
    return n


def findings_for(tables: list[PartitionedTable], policies: list[PartitionPolicy], now: datetime) -> Result:
    """Pure: the findings and samples for discovered tables under their policies."""
    result = Result()
    for t in tables:
        a = analyse(t, policy_for(t, policies), now)
        if a.step is not None:
            result.samples.append(Sample("partitions_ahead", float(a.ahead), t.qualified))
        for f in (_missing_future(a), _default_rows_finding(a), _retention_due(a)):
            if f is not None:
                # What could not be read travels with every finding of the table it belongs to.
                result.findings.append(replace(f, details={**f.details, "probe_error": t.problem}) if t.problem else f)
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


def _default_rows_title(t: PartitionedTable, d: DefaultPartition) -> str:
    if d.rows is None:
        return f"default partition {d.qualified} could not be read; row count unknown"
    if not d.estimated:
        return f"{d.rows:,} row(s) in default partition {d.qualified} ({t.key_column} {d.min_key} .. {d.max_key})"
    if d.reltuples >= d.rows:
        return f"about {d.rows:,} row(s) in default partition {d.qualified} (estimate from pg_class.reltuples)"
    return f"at least {d.rows:,} row(s) in default partition {d.qualified} (estimate: not analyzed, not counted)"


def _default_rows_finding(a: TableAnalysis) -> Finding | None:
    t, d = a.table, a.table.default
    if d is None or not (d.rows or (d.rows is None and t.problem)):
        return None
    source = "count" if not d.estimated else "pg_class.reltuples" if d.reltuples >= (d.rows or 1) else "limit probe"
    return Finding(
        check="default_partition_rows", object=d.qualified,
        # Unknown rows are reported (a failed probe must not resolve the finding) but do not warn.
        severity=Severity.warning if d.rows else Severity.info,
        title=_default_rows_title(t, d),
        details={"rows": d.rows, "rows_estimated": d.estimated, "rows_source": None if d.rows is None else source,
                 "min_key": _text_or_none(d.min_key), "max_key": _text_or_none(d.max_key), "table": t.qualified,
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


def _text_or_none(value: datetime | int | None) -> str | None:
    return None if value is None else str(value)


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


class NotPartitioned(PlanRefused):
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
    return plan(await probe_default_ranges(conn, tables, policies, now), policies, now)


async def plan_policies(conn: Connection, policies: list[dict[str, Any]], now: datetime,
                        table: str | None = None) -> list[PlannedStatement]:
    """plan_live for the policy dicts of the config (the shape every engine's planner takes)."""
    return await plan_live(conn, [PartitionPolicy.model_validate(p) for p in policies], now, table=table)


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
    policies = policies_from(ctx)
    tables = await discover(conn, exact_count_max_rows(ctx))
    return findings_for(await probe_default_ranges(conn, tables, policies, ctx.now), policies, ctx.now)


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
    needs=('partition_policies',),
))
