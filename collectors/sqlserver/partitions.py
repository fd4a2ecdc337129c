"""Partition maintenance for date-keyed partition functions: partitions ahead of now (premake),
rows in the open-ended last partition, partitions past retention, and the plan (DDL) for each.

The plan functions are pure and only return statements; applying them is a separate, audited
action. Premake: ALTER PARTITION SCHEME ... NEXT USED + ALTER PARTITION FUNCTION ... SPLIT RANGE.
Retention: SWITCH the oldest partition to a staging table, TRUNCATE it, MERGE RANGE its boundary.
With keep_table nothing is truncated: the oldest partition is SWITCHed into an archive table that
is kept, `<table>_before_<yyyymmdd>` (the boundary its rows lie below), then its boundary MERGEd.
dbfleet creates no tables on SQL Server (the archive must match the table's columns, indexes and
filegroup exactly), so when that table is missing, or not empty, retention stops there and the
finding names the table the DBA must create.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from collectors.common.partition_maths import future_bounds, infer_step, keep_table, policy_for
from collectors.common.rows import as_utc, by_kind, fetch_tagged, num
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Severity

_DATE_TYPES = ("date", "datetime", "datetime2", "smalldatetime", "datetimeoffset")

# sql_variant cannot cross ODBC (pyodbc has no type for it): convert to ISO text server-side.
BOUNDARIES_SQL = """
SELECT pf.name AS function_name, pf.boundary_value_on_right, prv.boundary_id,
       CAST(SQL_VARIANT_PROPERTY(prv.value, 'BaseType') AS nvarchar(32)) AS value_type,
       CASE WHEN SQL_VARIANT_PROPERTY(prv.value, 'BaseType') IN ('date', 'datetime', 'datetime2', 'smalldatetime')
            THEN CONVERT(nvarchar(64), CONVERT(datetime2, prv.value), 126)
            ELSE CONVERT(nvarchar(64), prv.value) END AS boundary_value
FROM sys.partition_functions AS pf
JOIN sys.partition_range_values AS prv ON prv.function_id = pf.function_id AND prv.parameter_id = 1
"""

PARTITIONS_SQL = """
SELECT OBJECT_SCHEMA_NAME(i.object_id) AS schema_name, OBJECT_NAME(i.object_id) AS table_name,
       ps.name AS scheme_name, pf.name AS function_name, p.partition_number, p.rows,
       fg.name AS filegroup_name
FROM sys.indexes AS i
JOIN sys.partition_schemes AS ps ON ps.data_space_id = i.data_space_id
JOIN sys.partition_functions AS pf ON pf.function_id = ps.function_id
JOIN sys.partitions AS p ON p.object_id = i.object_id AND p.index_id = i.index_id
JOIN sys.destination_data_spaces AS dds
     ON dds.partition_scheme_id = ps.data_space_id AND dds.destination_id = p.partition_number
JOIN sys.filegroups AS fg ON fg.data_space_id = dds.data_space_id
WHERE i.index_id IN (0, 1) AND OBJECTPROPERTY(i.object_id, 'IsUserTable') = 1
"""

# keep_table's archive tables, found by their name; sys.partitions.rows is approximate, but SWITCH
# itself refuses a target that is not empty, so a stale count can only make a switch fail.
ARCHIVES_SQL = """
SELECT OBJECT_SCHEMA_NAME(t.object_id) AS schema_name, t.name AS table_name, SUM(p.rows) AS rows
FROM sys.tables AS t
JOIN sys.partitions AS p ON p.object_id = t.object_id AND p.index_id IN (0, 1)
WHERE t.name LIKE N'%[_]before[_][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
GROUP BY t.object_id, t.name
"""

QUERIES = {"boundary": BOUNDARIES_SQL, "partition": PARTITIONS_SQL, "archive": ARCHIVES_SQL}
THRESHOLDS = {"premake": 4, "retention_days": None, "policies": {}}


@dataclass(slots=True)
class PartitionedTable:
    """One table on a date-keyed partition function, as the plan functions need it."""

    schema: str
    table: str
    function: str
    scheme: str
    range_right: bool
    value_type: str
    bounds: list[datetime]
    rows: dict[int, int] = field(default_factory=dict)   # partition_number -> rows
    filegroup: str = "PRIMARY"                            # where the newest partition lives
    tables_on_function: int = 1
    filegroups: dict[int, str] = field(default_factory=dict)  # partition_number -> filegroup
    archives: dict[str, int] = field(default_factory=dict)    # lower-cased table name -> rows, same schema

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def _q(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def literal(value: datetime, value_type: str) -> str:
    """A boundary literal no DATEFORMAT or language setting can misread."""
    if value_type == "date":
        return f"'{value:%Y%m%d}'"
    return f"'{value:%Y-%m-%dT%H:%M:%S}'"


def premake_bounds(t: PartitionedTable, now: datetime, premake: int) -> list[datetime]:
    """The boundaries to SPLIT in so that `premake` partitions lie ahead of now; [] if no interval."""
    step = infer_step(t.bounds)
    return [] if step is None else future_bounds(t.bounds, step, now.replace(tzinfo=None), premake)


def next_used_sql(scheme: str, filegroup: str) -> str:
    return f"ALTER PARTITION SCHEME {_q(scheme)} NEXT USED {_q(filegroup)}"


def split_sql(t: PartitionedTable, bound: datetime) -> str:
    return f"ALTER PARTITION FUNCTION {_q(t.function)}() SPLIT RANGE ({literal(bound, t.value_type)})"


def plan_premake(t: PartitionedTable, now: datetime, premake: int) -> list[str]:
    """NEXT USED + SPLIT RANGE for each boundary needed to have `premake` partitions ahead."""
    out = []
    for bound in premake_bounds(t, now, premake):
        out += [next_used_sql(t.scheme, t.filegroup), split_sql(t, bound)]
    return out


def expired_bounds(t: PartitionedTable, now: datetime, retention_days: int) -> list[datetime]:
    """Boundaries whose lower partition holds only rows older than the retention cutoff."""
    cutoff = now.replace(tzinfo=None) - timedelta(days=retention_days)
    # RANGE RIGHT: partition k is [b(k-1), b(k)), wholly old when b(k) <= cutoff.
    # RANGE LEFT: partition k is (b(k-1), b(k)], wholly old when b(k) < cutoff.
    return [b for b in t.bounds if (b <= cutoff if t.range_right else b < cutoff)]


def staging_table(t: PartitionedTable) -> str:
    return f"{_q(t.schema)}.{_q(t.table + '_dbfleet_staging')}"


def merge_sql(t: PartitionedTable, bound: datetime) -> str:
    return f"ALTER PARTITION FUNCTION {_q(t.function)}() MERGE RANGE ({literal(bound, t.value_type)})"


def retention_sql(t: PartitionedTable, bound: datetime) -> list[str]:
    """SWITCH partition 1 (the oldest) to the staging table, empty it, MERGE its upper boundary."""
    return [
        f"ALTER TABLE {_q(t.schema)}.{_q(t.table)} SWITCH PARTITION 1 TO {staging_table(t)}",
        f"TRUNCATE TABLE {staging_table(t)}",
        merge_sql(t, bound),
    ]


def archive_name(t: PartitionedTable, bound: datetime) -> str:
    return f"{t.table}_before_{bound:%Y%m%d}"


def archive_table(t: PartitionedTable, bound: datetime) -> str:
    return f"{_q(t.schema)}.{_q(archive_name(t, bound))}"


def _archive_filegroup(t: PartitionedTable, i: int) -> str:
    # MERGE RANGE drops the filegroup of the partition holding the boundary value: with RANGE RIGHT
    # partition 1 keeps its filegroup, with RANGE LEFT the merged partition is on the next one's.
    return t.filegroups.get(1 if t.range_right else i + 1, t.filegroup)


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    """keep_table retention: (action, boundary, sql) steps, oldest first, and why they stop early."""

    steps: list[tuple[str, datetime, str]]
    stopped: str | None = None   # None: every expired boundary is planned
    needs: str | None = None     # the archive table the DBA must create (or empty) for the next step


def plan_archive(t: PartitionedTable, now: datetime, days: int) -> ArchivePlan:
    """SWITCH partition 1 into its archive table and MERGE its boundary, for each expired boundary."""
    if t.tables_on_function > 1:
        return ArchivePlan([], f"partition function {t.function} is shared by {t.tables_on_function} tables: "
                               "MERGE RANGE would change all of them")
    steps: list[tuple[str, datetime, str]] = []
    for i, bound in enumerate(expired_bounds(t, now, days)):
        merge = ("merge_range", bound, merge_sql(t, bound))
        if not t.rows.get(i + 1, 0):  # after i merges, this partition is partition 1
            steps.append(merge)       # nothing in it (or switched out already); MERGE keeps rows anyway
            continue
        archive, held = archive_table(t, bound), t.archives.get(archive_name(t, bound).lower())
        if held is None:
            return ArchivePlan(steps, f"create {archive} with exactly the columns, indexes and constraints of "
                                      f"{_q(t.schema)}.{_q(t.table)}, on filegroup {_archive_filegroup(t, i)}; "
                                      f"dbfleet then switches the rows before {bound:%Y-%m-%d} into it", archive)
        if held:
            return ArchivePlan(steps, f"{archive} already holds {held:,} rows: SWITCH needs an empty table, so the "
                                      f"rows before {bound:%Y-%m-%d} stay until it is emptied or renamed", archive)
        steps += [("switch_to_archive", bound,
                   f"ALTER TABLE {_q(t.schema)}.{_q(t.table)} SWITCH PARTITION 1 TO {archive}"), merge]
    return ArchivePlan(steps)


def plan_retention(t: PartitionedTable, now: datetime, retention_days: int) -> list[str]:
    """SWITCH partition 1 out, TRUNCATE the staging table, MERGE its boundary; oldest first."""
    if t.tables_on_function > 1:
        return []  # MERGE RANGE would change every table on this function
    return [sql for bound in expired_bounds(t, now, retention_days) for sql in retention_sql(t, bound)]


def tables_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[PartitionedTable]:
    kinds = by_kind(rows)
    functions: dict[str, dict[str, Any]] = {}
    for b in sorted(kinds.get("boundary", []), key=lambda b: b["boundary_id"]):
        f = functions.setdefault(b["function_name"], {"right": bool(b["boundary_value_on_right"]),
                                                      "type": str(b["value_type"]).lower(), "bounds": []})
        if f["type"] in _DATE_TYPES and b["boundary_value"]:
            f["bounds"].append(as_utc(b["boundary_value"]).replace(tzinfo=None))
    tables: dict[tuple, PartitionedTable] = {}
    for p in sorted(kinds.get("partition", []), key=lambda p: p["partition_number"]):
        f = functions.get(p["function_name"])
        if f is None or f["type"] not in _DATE_TYPES or not f["bounds"]:
            continue
        key = (p["schema_name"], p["table_name"])
        t = tables.setdefault(key, PartitionedTable(p["schema_name"], p["table_name"], p["function_name"],
                                                    p["scheme_name"], f["right"], f["type"], f["bounds"]))
        t.rows[p["partition_number"]] = int(num(p["rows"]))
        t.filegroup = p["filegroup_name"] or t.filegroup
        t.filegroups[p["partition_number"]] = t.filegroup
    for t in tables.values():
        t.tables_on_function = sum(1 for o in tables.values() if o.function == t.function)
        t.archives = {str(a["table_name"]).lower(): int(num(a["rows"])) for a in kinds.get("archive", [])
                      if str(a["schema_name"]).lower() == t.schema.lower()}
    return list(tables.values())


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    thresholds = ctx.thresholds
    result = Result(state={"skipped": {}})
    for t in tables_from_rows(rows):
        policy = policy_for(t.name, thresholds)
        if infer_step(t.bounds) is None:
            result.state["skipped"][t.name] = "cannot infer the partition interval from its boundaries"
            continue
        result.findings += _premake_findings(t, ctx.now, int(policy["premake"]))
        if policy.get("retention_days") is not None:
            days, keep = int(policy["retention_days"]), keep_table(policy)
            if (f := (_archive_finding if keep else _retention_finding)(t, ctx.now, days)) is not None:
                result.findings.append(f)
    return result


def _premake_findings(t: PartitionedTable, now: datetime, premake: int) -> list[Finding]:
    naive_now = now.replace(tzinfo=None)
    ahead = sum(1 for b in t.bounds if b > naive_now)
    last_rows = t.rows.get(len(t.bounds) + 1, 0) if t.range_right else 0
    out = []
    if last_rows and t.bounds[-1] <= naive_now:
        out.append(Finding(
            check="catchall_partition_rows", object=t.name, severity=Severity.warning,
            title=f"{last_rows:,} rows in the open-ended last partition of {t.name} (after {t.bounds[-1]:%Y-%m-%d})",
            details={"rows": last_rows, "last_boundary": t.bounds[-1].isoformat(), "function": t.function,
                     "sql": PARTITIONS_SQL.strip()},
            recommendation="Splitting a partition that holds rows moves them under a schema-modification "
                           "lock and logs every row. Split just above the newest row first, in a quiet "
                           "period, then keep partitions ahead so the last one stays empty.",
        ))
    if ahead >= premake:
        return out
    plan = plan_premake(t, now, premake)
    out.append(Finding(
        check="missing_future_partitions", object=t.name,
        severity=Severity.critical if ahead == 0 else Severity.warning,
        title=f"{t.name} has {ahead} partition(s) ahead of now, policy wants {premake}",
        details={"ahead": ahead, "premake": premake, "function": t.function, "scheme": t.scheme,
                 "last_boundary": t.bounds[-1].isoformat(), "plan": plan, "sql": BOUNDARIES_SQL.strip()},
        recommendation=";\n".join(plan) + ";\nEach SPLIT of an empty partition is a metadata change; "
                       "run with SET LOCK_TIMEOUT so it gives up rather than queue behind long queries.",
    ))
    return out


def _retention_finding(t: PartitionedTable, now: datetime, days: int) -> Finding | None:
    expired = expired_bounds(t, now, days)
    if not expired:
        return None
    plan = plan_retention(t, now, days)
    shared = t.tables_on_function > 1
    return Finding(
        check="partition_retention_due", object=t.name, severity=Severity.warning,
        title=f"{len(expired)} partition(s) of {t.name} are entirely older than {days} days",
        details={"expired_boundaries": [b.isoformat() for b in expired], "retention_days": days,
                 "function_shared_by_tables": t.tables_on_function, "plan": plan, "sql": BOUNDARIES_SQL.strip()},
        recommendation=(f"Partition function {t.function} is shared by {t.tables_on_function} tables: "
                        "MERGE RANGE would change all of them, so no plan is offered." if shared else
                        f"First create {t.table}_dbfleet_staging with the same columns, indexes and filegroup "
                        "as partition 1, then:\n" + ";\n".join(plan) + ";\nSWITCH and MERGE of an empty "
                        "partition are metadata operations; the data is gone after TRUNCATE."),
    )


def _archive_finding(t: PartitionedTable, now: datetime, days: int) -> Finding | None:
    """keep_table: the SWITCH + MERGE plan that keeps the rows, and the archive table still needed."""
    expired = expired_bounds(t, now, days)
    if not expired:
        return None
    archive = plan_archive(t, now, days)
    plan = [sql for _, _, sql in archive.steps]
    stopped = f"\nNot done yet: {archive.stopped[0].upper()}{archive.stopped[1:]}." if archive.stopped else ""
    return Finding(
        check="partition_retention_due", object=t.name, severity=Severity.warning,
        title=f"{len(expired)} partition(s) of {t.name} are entirely older than {days} days (keep_table)",
        details={"expired_boundaries": [b.isoformat() for b in expired], "retention_days": days, "keep_table": True,
                 "plan": plan, "stopped": archive.stopped, "archive_needed": archive.needs,
                 "sql": BOUNDARIES_SQL.strip()},
        recommendation="".join(f"{sql};\n" for sql in plan) + "keep_table: the rows are switched into archive "
                       "tables and kept, never truncated. SWITCH is a metadata operation; MERGE RANGE of an "
                       "emptied partition moves the next partition's rows if that one is on another filegroup."
                       + stopped,
    )


async def run(conn: Connection, ctx: Context) -> Result:
    return transform(await fetch_tagged(conn, QUERIES), ctx)


SPEC = register(CollectorSpec(
    name="partitions",
    engine="sqlserver",
    description="Partitions ahead of now, rows in the last open partition, partitions past retention, with DDL plans",
    sql={11_000_000: PARTITIONS_SQL},
    transform=transform,
    run=run,
    interval_s=3600,
    timeout_s=30,
    thresholds=THRESHOLDS,
))
