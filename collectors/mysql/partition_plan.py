"""Time-based RANGE partitions in MySQL/MariaDB: parse, infer the interval, plan DDL, apply it.

Planning is pure (table + policy + now -> DDL strings), so a dry run shows exactly what apply
would run. Apply re-reads the table, refuses anything that is not RANGE-partitioned, and runs one
statement at a time under a short lock_wait_timeout; re-running it plans nothing new.

Retention with keep_table (as on PostgreSQL, where it means DETACH and keep the table) never drops
rows: CREATE TABLE <table>_<partition> LIKE <table>, REMOVE PARTITIONING on it, EXCHANGE PARTITION
into it, and only then DROP PARTITION of the emptied partition, which apply runs only after
`SELECT 1 ... PARTITION (p) LIMIT 1` under LOCK TABLES ... WRITE finds it empty. The EXCHANGE has
no WITH/WITHOUT VALIDATION clause: MariaDB 10.11 accepts neither (11.4 added them), MySQL 8 then
validates, and the archive is empty, so validation reads nothing. An archive name that already
holds rows is refused for that partition, never overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from collectors.common.maintenance import NotRangePartitioned, Outcome, PlannedStatement
from collectors.common.partition_maths import Step, add_step
from collectors.mysql._common import as_int, qualified, quote_ident

# TO_DAYS('0000-01-01') is 1 in MySQL while date(1, 1, 1).toordinal() is 1: 365 days apart.
TO_DAYS_OFFSET = 365
_EXPR_RE = re.compile(r"^\s*(to_days|unix_timestamp)\s*\(\s*`?([^`()]+)`?\s*\)\s*$", re.I)
_COLUMN_RE = re.compile(r"^\s*`?([^`,]+)`?\s*$")
TIME_TYPES = ("date", "datetime", "timestamp")
NAME_MAX = 64  # MySQL and MariaDB identifiers, in characters

Fetch = Callable[..., Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    upper: datetime | None  # None: VALUES LESS THAN MAXVALUE, the catch-all
    rows: int = 0


@dataclass(frozen=True, slots=True)
class RangeTable:
    schema: str
    table: str
    method: str          # RANGE or RANGE COLUMNS
    func: str            # to_days, unix_timestamp or column (RANGE COLUMNS on the column itself)
    column: str
    column_type: str     # date, datetime, timestamp
    partitions: tuple[Partition, ...]

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def catchall(self) -> Partition | None:
        last = self.partitions[-1] if self.partitions else None
        return last if last is not None and last.upper is None else None

    @property
    def bounded(self) -> list[Partition]:
        return [p for p in self.partitions if p.upper is not None]


@dataclass(frozen=True, slots=True)
class Interval:
    unit: str  # days or months
    n: int

    def label(self) -> str:
        names = {("days", 1): "daily", ("days", 7): "weekly", ("months", 1): "monthly",
                 ("months", 3): "quarterly", ("months", 12): "yearly"}
        return names.get((self.unit, self.n), f"every {self.n} {self.unit}")


@dataclass(frozen=True, slots=True)
class Policy:
    premake: int = 4
    retention_days: int | None = None
    max_new_partitions: int = 60  # a table abandoned for years is a DBA's call, not a loop's
    keep_table: bool = False      # retention keeps the rows in <table>_<partition> instead of dropping them


@dataclass(frozen=True, slots=True)
class KeepFacts:
    """What the server says about one expired partition and its archive table, from probes
    (SELECT 1 ... LIMIT 1), not from TABLE_ROWS, which is an estimate."""

    partition_has_rows: bool
    archive_exists: bool
    archive_partitioned: bool = False
    archive_has_rows: bool = False


@dataclass(frozen=True, slots=True)
class RetentionStep:
    action: str  # drop_partition, or create_archive / unpartition_archive / exchange_partition / drop_emptied_partition
    partition: Partition
    sql: str
    why: str


@dataclass(slots=True)
class Plan:
    table: RangeTable
    interval: Interval | None
    ahead: int
    create: list[Partition] = field(default_factory=list)
    drop: list[Partition] = field(default_factory=list)   # partitions retention takes out of the table
    create_sql: list[str] = field(default_factory=list)
    retention: list[RetentionStep] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # partition -> why retention leaves it alone

    @property
    def retention_sql(self) -> list[str]:
        return [step.sql for step in self.retention]

    @property
    def statements(self) -> list[str]:
        """Creates first, then retention: it never leaves a table without a partition ahead."""
        return [*self.create_sql, *self.retention_sql]


def parse_bound(raw: str, func: str) -> datetime | None:
    """A PARTITION_DESCRIPTION as a naive datetime (UTC for unix_timestamp), None for MAXVALUE."""
    text = str(raw).strip()
    if text.upper() == "MAXVALUE":
        return None
    if func == "to_days":
        return datetime.combine(date.fromordinal(int(text) - TO_DAYS_OFFSET), datetime.min.time())
    if func == "unix_timestamp":
        return datetime.fromtimestamp(int(text), timezone.utc).replace(tzinfo=None)
    return datetime.fromisoformat(text.strip("'"))


def parse_table(rows: Sequence[Mapping[str, Any]], column_types: Mapping[str, str]) -> RangeTable | None:
    """PARTITIONS rows of one table -> RangeTable, or None if not range-partitioned on time."""
    if not rows or any(r["partition_method"] not in ("RANGE", "RANGE COLUMNS") for r in rows):
        return None
    if any(r.get("subpartition_method") for r in rows):
        return None
    first = rows[0]
    expr = str(first["partition_expression"] or "")
    if first["partition_method"] == "RANGE":
        m = _EXPR_RE.match(expr)
        func, column = (m[1].lower(), m[2]) if m else ("", "")
    else:
        m = _COLUMN_RE.match(expr)
        func, column = ("column", m[1]) if m else ("", "")
    ctype = str(column_types.get(column, "")).lower()
    if not func or ctype not in TIME_TYPES:
        return None
    ordered = sorted(rows, key=lambda r: as_int(r["partition_ordinal_position"]))
    parts = tuple(Partition(r["partition_name"], parse_bound(r["partition_description"], func),
                            as_int(r.get("table_rows"))) for r in ordered)
    return RangeTable(first["table_schema"], first["table_name"], first["partition_method"], func,
                      column, ctype, parts)


def add_interval(at: datetime, interval: Interval, times: int = 1) -> datetime:
    """Month steps are only inferred between bounds on a day every month has (<= 28): no clamping."""
    step = Step(days=interval.n) if interval.unit == "days" else Step(months=interval.n)
    return add_step(at, step, times)


def infer_interval(bounds: Sequence[datetime]) -> Interval | None:
    """The step between the last two bounds, as calendar months when they fall on the same day."""
    if len(bounds) < 2:
        return None
    a, b = bounds[-2], bounds[-1]
    months = (b.year - a.year) * 12 + b.month - a.month
    # Calendar months only from days every month has; a 31st-of-month series is ambiguous.
    if months > 0 and a.day == b.day <= 28 and a.time() == b.time() and add_interval(a, Interval("months", months)) == b:
        return Interval("months", months)
    days = (b - a).days
    if days >= 1 and b - a == timedelta(days=days):
        return Interval("days", days)
    return None


def partition_name(lower: datetime, interval: Interval, taken: set[str]) -> str:
    """Named for the start of its range: p20240101 (days), p202401 (months), p2024 (years)."""
    if interval.unit == "months":
        name = f"p{lower:%Y}" if interval.n == 12 and lower.month == 1 else f"p{lower:%Y%m}"
    else:
        name = f"p{lower:%Y%m%d}"
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def bound_sql(table: RangeTable, at: datetime | None) -> str:
    if at is None:
        return "MAXVALUE" if table.method == "RANGE" else "(MAXVALUE)"
    if table.func == "to_days":
        return f"(TO_DAYS('{at:%Y-%m-%d}'))"
    if table.func == "unix_timestamp":
        # A literal, computed in UTC: UNIX_TIMESTAMP('...') would depend on the session time zone.
        return f"({int(at.replace(tzinfo=timezone.utc).timestamp())})"
    return f"('{at:%Y-%m-%d}')" if table.column_type == "date" else f"('{at:%Y-%m-%d %H:%M:%S}')"


def _definition(table: RangeTable, p: Partition) -> str:
    return f"PARTITION {quote_ident(p.name)} VALUES LESS THAN {bound_sql(table, p.upper)}"


def plan_table(table: RangeTable, policy: Policy, now: datetime,
               kept: Mapping[str, KeepFacts] | None = None) -> Plan:
    """What to create so `premake` partitions lie wholly ahead of now, and what retention does.

    `kept` is what keep_facts read from the server; without it a keep_table plan assumes the
    partition holds rows and has no archive yet (the full sequence, the safe default)."""
    now = now.astimezone(timezone.utc).replace(tzinfo=None) if now.tzinfo else now
    bounded = table.bounded
    interval = infer_interval([p.upper for p in bounded])
    plan = Plan(table, interval, ahead=sum(1 for lo in _lowers(bounded) if lo is not None and lo > now))
    if interval is not None and bounded:
        plan.create = _future(table, interval, policy, now, plan.ahead)
    plan.create_sql = _create_sql(table, plan.create)
    if policy.retention_days is not None:
        old = [p for p in bounded if p.upper <= now - timedelta(days=policy.retention_days)]
        due = old[: max(0, len(bounded) + len(plan.create) - 1)]  # a table keeps one partition
        for p in due:
            _plan_retention(plan, p, policy, (kept or {}).get(p.name))
    return plan


def _lowers(bounded: Sequence[Partition]) -> list[datetime | None]:
    return [None] + [p.upper for p in bounded[:-1]]


def _future(table: RangeTable, interval: Interval, policy: Policy, now: datetime, ahead: int) -> list[Partition]:
    cutoff = now - timedelta(days=policy.retention_days) if policy.retention_days is not None else None
    taken = {p.name for p in table.partitions}
    out: list[Partition] = []
    lower = upper = table.bounded[-1].upper
    while ahead < policy.premake and len(out) < policy.max_new_partitions:
        upper = add_interval(upper, interval)
        if cutoff is not None and upper <= cutoff:
            # Retention would drop it at once: let the next partition span this gap instead,
            # so that a second apply has nothing left to do.
            continue
        name = partition_name(lower, interval, taken)
        taken.add(name)
        out.append(Partition(name, upper))
        ahead += lower > now
        lower = upper
    return out


def _create_sql(table: RangeTable, create: Sequence[Partition]) -> list[str]:
    if not create:
        return []
    target = qualified(table.schema, table.table)
    catchall = table.catchall
    if catchall is None:
        return [f"ALTER TABLE {target} ADD PARTITION ({', '.join(_definition(table, p) for p in create)})"]
    parts = ", ".join(_definition(table, p) for p in [*create, catchall])
    return [f"ALTER TABLE {target} REORGANIZE PARTITION {quote_ident(catchall.name)} INTO ({parts})"]


def archive_name(table: RangeTable, p: Partition) -> str:
    return f"{table.table}_{p.name}"


def drop_partition_sql(table: RangeTable, partition: str) -> str:
    return f"ALTER TABLE {qualified(table.schema, table.table)} DROP PARTITION {quote_ident(partition)}"


def _plan_retention(plan: Plan, p: Partition, policy: Policy, facts: KeepFacts | None) -> None:
    table = plan.table
    drop_sql = drop_partition_sql(table, p.name)
    old = f"ends {p.upper:%Y-%m-%d}, older than {policy.retention_days} days"
    if not policy.keep_table:
        plan.drop.append(p)
        plan.retention.append(RetentionStep("drop_partition", p, drop_sql, old))
        return
    archive = archive_name(table, p)
    if len(archive) > NAME_MAX:
        plan.refused[p.name] = (f"the archive table name {archive} is longer than {NAME_MAX} characters; "
                                f"keep_table leaves {p.name} in place: archive it by hand")
        return
    if facts is not None and facts.partition_has_rows and facts.archive_has_rows:
        plan.refused[p.name] = (f"{table.schema}.{archive} already exists and holds rows: EXCHANGE would swap "
                                f"them into {table.name}, so {p.name} is left in place; rename or empty that table")
        return
    plan.drop.append(p)
    plan.retention += _keep_steps(table, p, facts, old)
    plan.retention.append(RetentionStep("drop_emptied_partition", p, drop_sql, (
        f"{old}; its rows are kept in {table.schema}.{archive}; apply drops it only if "
        f"SELECT 1 ... PARTITION ({p.name}) LIMIT 1 finds it empty under LOCK TABLES")))


def _keep_steps(table: RangeTable, p: Partition, facts: KeepFacts | None, old: str) -> list[RetentionStep]:
    """CREATE ... LIKE, REMOVE PARTITIONING, EXCHANGE: what is still missing to move p's rows out."""
    if facts is not None and not facts.partition_has_rows:
        return []  # empty (exchanged by an earlier apply, or never used): only the DROP is left
    target, archive = qualified(table.schema, table.table), qualified(table.schema, archive_name(table, p))
    why = f"{old}; keep_table: its rows move to {table.schema}.{archive_name(table, p)}"
    steps = []
    if facts is None or not facts.archive_exists:
        steps.append(RetentionStep("create_archive", p, f"CREATE TABLE {archive} LIKE {target}", why))
    if facts is None or not facts.archive_exists or facts.archive_partitioned:
        # CREATE ... LIKE copies the partitioning; EXCHANGE needs a non-partitioned table.
        steps.append(RetentionStep("unpartition_archive", p, f"ALTER TABLE {archive} REMOVE PARTITIONING", why))
    steps.append(RetentionStep("exchange_partition", p,
                               f"ALTER TABLE {target} EXCHANGE PARTITION {quote_ident(p.name)} WITH TABLE {archive}",
                               f"{why} (metadata only: the two tables swap their data)"))
    return steps


PARTITIONS_SQL = """
SELECT TABLE_SCHEMA AS table_schema, TABLE_NAME AS table_name, PARTITION_NAME AS partition_name,
       PARTITION_ORDINAL_POSITION AS partition_ordinal_position, PARTITION_METHOD AS partition_method,
       SUBPARTITION_METHOD AS subpartition_method, PARTITION_EXPRESSION AS partition_expression,
       PARTITION_DESCRIPTION AS partition_description, TABLE_ROWS AS table_rows
FROM information_schema.PARTITIONS
WHERE PARTITION_NAME IS NOT NULL AND {where}
ORDER BY TABLE_SCHEMA, TABLE_NAME, PARTITION_ORDINAL_POSITION
"""
COLUMNS_SQL = """
SELECT TABLE_SCHEMA AS table_schema, TABLE_NAME AS table_name, COLUMN_NAME AS column_name,
       DATA_TYPE AS data_type
FROM information_schema.COLUMNS
WHERE DATA_TYPE IN ('date', 'datetime', 'timestamp') AND {where}
"""


async def load_table(fetch: Fetch, schema: str, table: str) -> RangeTable:
    """Read one table from information_schema with bound parameters; refuse if not RANGE on time."""
    where = "TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    rows = await fetch(PARTITIONS_SQL.format(where=where), schema, table)
    if not rows or any(r["partition_method"] not in ("RANGE", "RANGE COLUMNS") for r in rows):
        raise NotRangePartitioned(f"{schema}.{table} is not a RANGE-partitioned table")
    columns = await fetch(COLUMNS_SQL.format(where=where), schema, table)
    parsed = parse_table(rows, {c["column_name"]: c["data_type"] for c in columns})
    if parsed is None:
        raise NotRangePartitioned(f"{schema}.{table} is not range-partitioned on a date/time column")
    return parsed


ARCHIVES_SQL = """
SELECT TABLE_NAME AS table_name, CREATE_OPTIONS AS create_options
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = %s AND TABLE_NAME IN ({names})
"""


class PartitionNotEmpty(RuntimeError):
    """A partition whose rows keep_table must keep still holds rows: it was not dropped."""


async def _has_rows(fetch: Fetch, source: str) -> bool:
    return bool(await fetch(f"SELECT 1 AS found FROM {source} LIMIT 1"))


def _partition_of(table: RangeTable, partition: str) -> str:
    return f"{qualified(table.schema, table.table)} PARTITION ({quote_ident(partition)})"


async def keep_facts(fetch: Fetch, table: RangeTable, parts: Sequence[Partition]) -> dict[str, KeepFacts]:
    """Probe each expired partition and its archive table; names are bound or backtick-quoted."""
    if not parts:
        return {}
    names = [archive_name(table, p) for p in parts]
    rows = await fetch(ARCHIVES_SQL.format(names=", ".join(["%s"] * len(names))), table.schema, *names)
    partitioned = {r["table_name"]: "partitioned" in str(r["create_options"] or "").lower() for r in rows}
    out = {}
    for p, name in zip(parts, names):
        exists = name in partitioned
        out[p.name] = KeepFacts(await _has_rows(fetch, _partition_of(table, p.name)), exists,
                                partitioned.get(name, False),
                                exists and await _has_rows(fetch, qualified(table.schema, name)))
    return out


async def plan_live_table(fetch: Fetch, table: RangeTable, policy: Policy, now: datetime) -> Plan:
    """plan_table, with keep_table's facts read from the server (SELECTs only)."""
    plan = plan_table(table, policy, now)
    if not policy.keep_table or not plan.drop:
        return plan
    return plan_table(table, policy, now, await keep_facts(fetch, table, plan.drop))


async def drop_emptied_partition(fetch: Fetch, table: RangeTable, partition: str) -> None:
    """DROP PARTITION only if the partition is empty, checked under LOCK TABLES ... WRITE so that no
    row can land in it between the check and the drop (the DDL runs under the same lock)."""
    await fetch(f"LOCK TABLES {qualified(table.schema, table.table)} WRITE")
    try:
        if await _has_rows(fetch, _partition_of(table, partition)):
            raise PartitionNotEmpty(f"partition {partition} of {table.name} still holds rows, so it was not dropped "
                                    "(keep_table: its rows must be exchanged into the archive table first)")
        await fetch(drop_partition_sql(table, partition))
    finally:
        await fetch("UNLOCK TABLES")


async def run_step(fetch: Fetch, table: RangeTable, action: str, partition: str, sql: str) -> None:
    """One planned statement; the DROP of a partition whose rows are kept goes through the check."""
    if action == "drop_emptied_partition":
        await drop_emptied_partition(fetch, table, partition)
    else:
        await fetch(sql)


def steps(plan: Plan) -> list[tuple[str, str, str]]:
    """(action, partition(s), sql) for every statement of the plan, in the order they run."""
    created = ", ".join(p.name for p in plan.create)
    return [("create_partitions", created, sql) for sql in plan.create_sql] + \
           [(s.action, s.partition.name, s.sql) for s in plan.retention]


async def apply(conn: Any, schema: str, table: str, policy: Policy, now: datetime | None = None,
                lock_wait_timeout_s: int = 5) -> list[Outcome]:
    """Plan from the live table and run it on a writable aiomysql connection, one statement at a time.

    Stops at the first failure (later statements assume earlier ones). Every outcome is returned
    so the caller can write one audit row per statement. Idempotent: a second run plans nothing.
    """
    fetch = raw_fetcher(conn)
    live = await load_table(fetch, schema, table)
    planned = steps(await plan_live_table(fetch, live, policy, now or datetime.now(timezone.utc)))
    if not planned:
        return []
    await fetch(f"SET SESSION lock_wait_timeout = {int(lock_wait_timeout_s)}")
    outcomes = []
    for action, partition, sql in planned:
        stmt = PlannedStatement(action, schema, table, partition, sql, "", policy)
        try:
            await run_step(fetch, live, action, partition, sql)
            outcomes.append(Outcome(stmt, "ok"))
        except Exception as e:  # noqa: BLE001 - any server error ends the run and is audited
            outcomes.append(Outcome(stmt, "failed", str(e)))
            break
    return outcomes


def raw_fetcher(conn: Any) -> Fetch:
    """fetch(sql, *args) -> dict rows over a plain aiomysql connection (a writable admin session)."""
    async def fetch(sql: str, *args: Any) -> list[dict[str, Any]]:
        async with conn.cursor() as cur:
            await cur.execute(sql, args or None)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, r)) for r in await cur.fetchall()]
    return fetch
