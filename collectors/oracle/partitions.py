"""Partition maintenance for single-column RANGE partitioned tables on a DATE/TIMESTAMP key.

HIGH_VALUE is a LONG holding the bound as an expression, e.g.
TO_DATE(' 2024-01-01 00:00:00', 'SYYYY-MM-DD HH24:MI:SS', 'NLS_CALENDAR=GREGORIAN'),
TIMESTAMP' 2024-01-01 00:00:00' or MAXVALUE; `parse_high_value` reads it. Interval-partitioned
tables get new partitions on insert and need no premake: they are skipped for that, with the
reason in the result state. Plans: ADD PARTITION (or SPLIT of a MAXVALUE partition) ahead,
DROP PARTITIONS ... UPDATE INDEXES past retention.

With keep_table, retention keeps the rows: CREATE TABLE <table>_<partition> FOR EXCHANGE WITH TABLE
(12.2+), EXCHANGE PARTITION into it, then DROP PARTITIONS of the emptied partition. The EXCHANGE is
EXCLUDING INDEXES ... UPDATE GLOBAL INDEXES: FOR EXCHANGE copies no index, so INCLUDING INDEXES
fails with ORA-14098 on any table with a local index, and without UPDATE GLOBAL INDEXES every global
index would go UNUSABLE. WITHOUT VALIDATION is safe because the archive is checked to be empty.
Emptiness is probed (SELECT 1 ... WHERE ROWNUM = 1), not read from NUM_ROWS, a statistic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from collectors.common.partition_maths import future_bounds, infer_step, keep_table, policy_for
from collectors.common.rows import num
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Severity

SQL = """
SELECT pt.owner, pt.table_name, pt.partitioning_type, pt."INTERVAL" AS interval_expr,
       kc.column_name AS key_column, tc.data_type AS key_type,
       p.partition_name, p.partition_position, p.high_value, p.num_rows, p.tablespace_name
FROM dba_part_tables pt
JOIN dba_part_key_columns kc
  ON kc.owner = pt.owner AND kc.name = pt.table_name AND kc.object_type = 'TABLE' AND kc.column_position = 1
JOIN dba_tab_columns tc ON tc.owner = pt.owner AND tc.table_name = pt.table_name AND tc.column_name = kc.column_name
JOIN dba_tab_partitions p ON p.table_owner = pt.owner AND p.table_name = pt.table_name
WHERE pt.partitioning_type = 'RANGE' AND pt.partitioning_key_count = 1
  AND pt.owner NOT IN (SELECT username FROM dba_users WHERE oracle_maintained = 'Y')
ORDER BY pt.owner, pt.table_name, p.partition_position
"""

THRESHOLDS = {"premake": 4, "retention_days": None, "policies": {}}
NAME_MAX = 128  # bytes, Oracle 12.2+ (FOR EXCHANGE needs 12.2 anyway)
# keep_table's archive tables that exist; compared by exact name in Python (LIKE only narrows).
ARCHIVES_SQL = "SELECT table_name FROM dba_tables WHERE owner = :owner AND table_name LIKE :prefix"

_TO_DATE = re.compile(r"TO_DATE\(\s*'\s*(\d{4}-\d{2}-\d{2}(?:\s+\d{2}:\d{2}:\d{2})?)\s*'", re.I)
_TIMESTAMP = re.compile(r"TIMESTAMP\s*'\s*(\d{4}-\d{2}-\d{2}(?:\s+\d{2}:\d{2}:\d{2})?)(?:\.\d+)?\s*'", re.I)


def parse_high_value(text: str | None) -> datetime | str | None:
    """A datetime for a date bound, 'MAXVALUE' for the catch-all, None for anything else."""
    if text is None:
        return None
    if text.strip().upper() == "MAXVALUE":
        return "MAXVALUE"
    m = _TO_DATE.search(text) or _TIMESTAMP.search(text)
    if m is None:
        return None
    value = m.group(1)
    return datetime.fromisoformat(value if " " in value else value + " 00:00:00")


@dataclass(slots=True)
class RangeTable:
    owner: str
    table: str
    key_type: str
    interval: str | None
    partitions: list[tuple[str, datetime | str, int | None]] = field(default_factory=list)  # name, bound, rows

    @property
    def name(self) -> str:
        return f"{self.owner}.{self.table}"

    @property
    def bounds(self) -> list[datetime]:
        return [b for _, b, _ in self.partitions if isinstance(b, datetime)]

    @property
    def maxvalue(self) -> tuple[str, datetime | str, int | None] | None:
        last = self.partitions[-1] if self.partitions else None
        return last if last and last[1] == "MAXVALUE" else None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: datetime, key_type: str) -> str:
    if key_type.upper().startswith("TIMESTAMP"):
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"
    return f"TO_DATE('{value:%Y-%m-%d %H:%M:%S}', 'YYYY-MM-DD HH24:MI:SS')"


def premake_partitions(t: RangeTable, now: datetime, premake: int) -> list[tuple[str, str]]:
    """(new partition name, DDL) pairs: ADD PARTITION after the last bound, or SPLIT the MAXVALUE
    partition, until `premake` partitions start after now. [] for interval tables."""
    step, bounds = infer_step(t.bounds), t.bounds
    if step is None or t.interval:
        return []
    naive = now.replace(tzinfo=None)
    out, lower = [], bounds[-1]
    # The partition below the first bound after now is the current one, so ask for one more bound.
    for bound in future_bounds(bounds, step, naive, premake + 1):
        name = f"P_{lower:%Y%m%d}"
        if t.maxvalue:
            sql = (f"ALTER TABLE {_q(t.owner)}.{_q(t.table)} SPLIT PARTITION {_q(t.maxvalue[0])} AT "
                   f"({literal(bound, t.key_type)}) INTO (PARTITION {_q(name)}, PARTITION {_q(t.maxvalue[0])}) "
                   "UPDATE INDEXES")
        else:
            sql = (f"ALTER TABLE {_q(t.owner)}.{_q(t.table)} ADD PARTITION {_q(name)} "
                   f"VALUES LESS THAN ({literal(bound, t.key_type)})")
        out.append((name, sql))
        lower = bound
    return out


def plan_premake(t: RangeTable, now: datetime, premake: int) -> list[str]:
    """ADD PARTITION after the last bound, or SPLIT the MAXVALUE partition, until `premake`
    partitions start after now."""
    return [sql for _, sql in premake_partitions(t, now, premake)]


def expired_partitions(t: RangeTable, now: datetime, retention_days: int) -> list[str]:
    """Partitions whose every row is older than the cutoff (rows < HIGH_VALUE <= cutoff)."""
    cutoff = now.replace(tzinfo=None) - timedelta(days=retention_days)
    names = [name for name, bound, _ in t.partitions if isinstance(bound, datetime) and bound <= cutoff]
    if t.interval and names and names[0] == t.partitions[0][0]:
        names = names[1:]  # the range section of an interval table must keep a partition
    if len(names) == len(t.partitions):
        names = names[:-1]  # a table cannot lose its last partition: keep the newest
    return names


def drop_sql(t: RangeTable, partition: str) -> str:
    return f"ALTER TABLE {_q(t.owner)}.{_q(t.table)} DROP PARTITIONS {_q(partition)} UPDATE INDEXES"


def plan_retention(t: RangeTable, now: datetime, retention_days: int) -> list[str]:
    return [drop_sql(t, name) for name in expired_partitions(t, now, retention_days)]


@dataclass(frozen=True, slots=True)
class KeepFacts:
    """One expired partition and its archive table, as probes on the server found them."""

    partition_has_rows: bool
    archive_exists: bool
    archive_has_rows: bool = False


def archive_name(t: RangeTable, partition: str) -> str:
    return f"{t.table}_{partition}"


def exchange_sql(t: RangeTable, partition: str) -> str:
    return (f"ALTER TABLE {_q(t.owner)}.{_q(t.table)} EXCHANGE PARTITION {_q(partition)} WITH TABLE "
            f"{_q(t.owner)}.{_q(archive_name(t, partition))} "
            "EXCLUDING INDEXES WITHOUT VALIDATION UPDATE GLOBAL INDEXES")


def _keep_refusal(t: RangeTable, partition: str, facts: KeepFacts | None) -> str | None:
    archive = archive_name(t, partition)
    if len(archive.encode()) > NAME_MAX:
        return f"the archive table name {archive} is longer than {NAME_MAX} bytes: archive {partition} by hand"
    if facts is not None and facts.partition_has_rows and facts.archive_has_rows:
        return (f"{t.owner}.{archive} already exists and holds rows: EXCHANGE would swap them into {t.name}, "
                f"so {partition} is left in place; rename or empty that table")
    return None


def plan_keep(t: RangeTable, now: datetime, days: int,
              kept: Mapping[str, KeepFacts] | None = None) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """keep_table retention: (action, partition, sql) steps, each partition's DROP after its EXCHANGE,
    and the partitions left in place with why. Without facts: assume rows and no archive yet."""
    steps: list[tuple[str, str, str]] = []
    refused: dict[str, str] = {}
    for name in expired_partitions(t, now, days):
        facts = (kept or {}).get(name)
        if (reason := _keep_refusal(t, name, facts)) is not None:
            refused[name] = reason
            continue
        if facts is None or facts.partition_has_rows:
            if facts is None or not facts.archive_exists:
                steps.append(("create_archive", name, f"CREATE TABLE {_q(t.owner)}.{_q(archive_name(t, name))} "
                                                      f"FOR EXCHANGE WITH TABLE {_q(t.owner)}.{_q(t.table)}"))
            steps.append(("exchange_partition", name, exchange_sql(t, name)))
        steps.append(("drop_emptied_partition", name, drop_sql(t, name)))
    return steps, refused


async def _has_rows(conn: Connection, source: str) -> bool:
    return bool(await conn.fetch(f"SELECT 1 AS found FROM {source} WHERE ROWNUM = 1"))


def partition_source(t: RangeTable, partition: str) -> str:
    return f"{_q(t.owner)}.{_q(t.table)} PARTITION ({_q(partition)})"


async def keep_facts(conn: Connection, t: RangeTable, partitions: Sequence[str]) -> dict[str, KeepFacts]:
    """Probe each expired partition and its archive table (SELECTs only; names double-quoted)."""
    if not partitions:
        return {}
    found = {r["table_name"] for r in await conn.fetch(ARCHIVES_SQL, t.owner, f"{t.table}%")}
    out = {}
    for name in partitions:
        archive = archive_name(t, name)
        out[name] = KeepFacts(await _has_rows(conn, partition_source(t, name)), archive in found,
                              archive in found and await _has_rows(conn, f"{_q(t.owner)}.{_q(archive)}"))
    return out


def tables_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[RangeTable]:
    tables: dict[tuple, RangeTable] = {}
    rows = [r for r in rows if r.get("kind") != "keep"]
    for r in sorted(rows, key=lambda r: (r["owner"], r["table_name"], r["partition_position"])):
        if not (r["key_type"] == "DATE" or str(r["key_type"]).startswith("TIMESTAMP")):
            continue
        t = tables.setdefault((r["owner"], r["table_name"]),
                              RangeTable(r["owner"], r["table_name"], r["key_type"], r.get("interval_expr")))
        rows_in = None if r.get("num_rows") is None else int(num(r["num_rows"]))
        t.partitions.append((r["partition_name"], parse_high_value(r["high_value"]), rows_in))
    return [t for t in tables.values() if t.bounds]


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    thresholds = ctx.thresholds
    result = Result(state={"skipped": {}})
    kept = _kept(rows)
    for t in tables_from_rows(rows):
        policy = policy_for(t.name, thresholds)
        if t.interval:
            result.state["skipped"][t.name] = (f"interval partitioned ({t.interval}): Oracle creates "
                                               "partitions on insert, no premake needed")
        elif infer_step(t.bounds) is None:
            result.state["skipped"][t.name] = "cannot infer the partition interval from HIGH_VALUE bounds"
        else:
            result.findings += _premake_findings(t, ctx.now, int(policy["premake"]))
        if policy.get("retention_days") is not None:
            days = int(policy["retention_days"])
            f = _keep_finding(t, ctx.now, days, kept.get(t.name)) if keep_table(policy) else \
                _retention_finding(t, ctx.now, days)
            if f is not None:
                result.findings.append(f)
    return result


_KEEP_FIELDS = ("partition_has_rows", "archive_exists", "archive_has_rows")


def _kept(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, KeepFacts]]:
    """The run hook's keep_table probes (rows of kind 'keep'), per table and partition."""
    out: dict[str, dict[str, KeepFacts]] = {}
    for r in rows:
        if r.get("kind") == "keep":
            out.setdefault(f"{r['owner']}.{r['table_name']}", {})[r["partition_name"]] = \
                KeepFacts(*(bool(r[k]) for k in _KEEP_FIELDS))
    return out


def _premake_findings(t: RangeTable, now: datetime, premake: int) -> list[Finding]:
    naive = now.replace(tzinfo=None)
    ahead = max(0, sum(1 for b in t.bounds if b > naive) - 1)
    out = []
    if t.maxvalue and (t.maxvalue[2] or 0) > 0:
        out.append(Finding(
            check="catchall_partition_rows", object=t.name, severity=Severity.warning,
            title=f"{t.maxvalue[2]:,} rows in the MAXVALUE partition {t.maxvalue[0]} of {t.name}",
            details={"partition": t.maxvalue[0], "rows": t.maxvalue[2], "note": "NUM_ROWS is from the last statistics gathering",
                     "sql": SQL.strip()},
            recommendation="SPLIT of a MAXVALUE partition that holds rows rewrites them; split just above "
                           "the newest row first, in a quiet period, with UPDATE INDEXES.",
        ))
    if ahead >= premake:
        return out
    plan = plan_premake(t, now, premake)
    out.append(Finding(
        check="missing_future_partitions", object=t.name,
        severity=Severity.critical if ahead == 0 else Severity.warning,
        title=f"{t.name} has {ahead} partition(s) ahead of now, policy wants {premake}",
        details={"ahead": ahead, "premake": premake, "last_bound": t.bounds[-1].isoformat(), "plan": plan,
                 "sql": SQL.strip()},
        recommendation=";\n".join(plan) + ";\nOr convert the table to interval partitioning "
                       "(ALTER TABLE ... SET INTERVAL (NUMTOYMINTERVAL(1, 'MONTH'))) so Oracle adds them itself.",
    ))
    return out


def _retention_finding(t: RangeTable, now: datetime, days: int) -> Finding | None:
    names = expired_partitions(t, now, days)
    if not names:
        return None
    plan = plan_retention(t, now, days)
    return Finding(
        check="partition_retention_due", object=t.name, severity=Severity.warning,
        title=f"{len(names)} partition(s) of {t.name} are entirely older than {days} days",
        details={"partitions": names, "retention_days": days, "plan": plan, "sql": SQL.strip()},
        recommendation=";\n".join(plan) + ";\nUPDATE INDEXES keeps global indexes usable while the "
                       "partition goes; the data is gone (take an export first if it must be kept).",
    )


def _keep_finding(t: RangeTable, now: datetime, days: int, kept: Mapping[str, KeepFacts] | None) -> Finding | None:
    steps, refused = plan_keep(t, now, days, kept)
    if not steps and not refused:
        return None
    plan = [sql for _, _, sql in steps]
    names = list(dict.fromkeys([name for _, name, _ in steps] + list(refused)))
    return Finding(
        check="partition_retention_due", object=t.name, severity=Severity.warning,
        title=f"{len(names)} partition(s) of {t.name} are entirely older than {days} days (keep_table)",
        details={"partitions": names, "retention_days": days, "keep_table": True, "plan": plan,
                 "refused": refused, "sql": SQL.strip()},
        recommendation="".join(f"{sql};\n" for sql in plan) + "keep_table: each partition's rows are kept in "
                       "<table>_<partition> (EXCHANGE swaps the segments); only the emptied partition is dropped."
                       + "".join(f"\nNot done: {reason}" for reason in refused.values()),
    )


async def run(conn: Connection, ctx: Context) -> Result:
    """The catalog query, plus keep_table's probes of expired partitions and their archive tables."""
    rows = list(await conn.fetch(SQL))
    thresholds = ctx.thresholds
    for t in tables_from_rows(rows):
        policy = policy_for(t.name, thresholds)
        if policy.get("retention_days") is None or not keep_table(policy):
            continue
        facts = await keep_facts(conn, t, expired_partitions(t, ctx.now, int(policy["retention_days"])))
        rows += [{"kind": "keep", "owner": t.owner, "table_name": t.table, "partition_name": name,
                  **{k: getattr(f, k) for k in _KEEP_FIELDS}} for name, f in facts.items()]
    return transform(rows, ctx)


SPEC = register(CollectorSpec(
    name="partitions",
    engine="oracle",
    description="Range partitions ahead of now, rows in MAXVALUE, partitions past retention, with DDL plans",
    sql={120100: SQL},
    run=run,
    transform=transform,
    interval_s=3600,
    timeout_s=30,
    thresholds=THRESHOLDS,
))
