"""Pure partition maintenance planning: catalog facts + policies + now -> exact DDL, no server.

The DDL is built only from names read out of the catalog (pg_class/pg_namespace), quoted here
with PostgreSQL's own identifier rule, and from bound values we compute ourselves; apply()
re-checks every name against the live catalog before it runs anything.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timezone, tzinfo
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator

from collectors.common.partition_maths import Step, add_step

TIME_KEYS = {"timestamptz", "timestamp", "date"}
INT_KEYS = {"int2", "int4", "int8"}
# Never plan more than this many partitions for one table in one go: a table abandoned for
# years should be looked at by a person, not back-filled with hundreds of empty partitions.
MAX_NEW_PER_TABLE = 36
PG_NAME_MAX = 63


class PartitionPolicy(BaseModel):
    """Per table pattern (glob on schema.table): interval, premake, retention, keep_table."""

    table: str = "*"
    interval: str | int | None = None
    premake: int = Field(default=4, ge=0, le=MAX_NEW_PER_TABLE)
    retention: str | int | None = None
    keep_table: bool = False

    @field_validator("interval", "retention")
    @classmethod
    def _parseable(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, str):
            parse_interval(v)
        elif isinstance(v, int) and v <= 0:
            raise ValueError("must be positive")
        return v

    def matches(self, qualified: str) -> bool:
        return fnmatch.fnmatchcase(qualified, self.table)


_UNITS = {"minute": (0, 0, 60), "hour": (0, 0, 3600), "day": (0, 1, 0), "week": (0, 7, 0),
          "month": (1, 0, 0), "quarter": (3, 0, 0), "year": (12, 0, 0)}
_ALIASES = {"hourly": "1 hour", "daily": "1 day", "weekly": "1 week", "monthly": "1 month",
            "quarterly": "1 quarter", "yearly": "1 year"}


def parse_interval(text: str | int) -> Step:
    """'1 month', '7 days', 'daily', or an int (integer keys) -> Step; ValueError otherwise."""
    if isinstance(text, int):
        return Step(width=text)
    text = _ALIASES.get(text.strip().lower(), text.strip().lower())
    if text.lstrip("-").isdigit():
        return Step(width=int(text))
    m = re.fullmatch(r"(\d+)\s*(minute|hour|day|week|month|quarter|year)s?", text)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"not an interval: {text!r} (use e.g. '1 month', '7 days', 'daily')")
    months, days, seconds = (int(m.group(1)) * u for u in _UNITS[m.group(2)])
    return Step(months=months, days=days, seconds=seconds)


@dataclass(frozen=True, slots=True)
class Partition:
    """One attached partition; lower/upper None mean MINVALUE/MAXVALUE."""

    schema: str
    name: str
    lower: datetime | int | None
    upper: datetime | int | None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


# (lower, upper, holds_rows) for one planned range, as an exists probe on the default answered it.
RangeProbe = tuple[datetime | int, datetime | int, bool]


@dataclass(frozen=True, slots=True)
class DefaultPartition:
    """The default partition: its rows (None when unknown) and key range, or probes per planned range.

    Counted exactly only when small; otherwise `rows` is an estimate and the key range is not read,
    and the planner relies on `range_probes` to know whether a new range would hold its rows.
    """

    schema: str
    name: str
    rows: int | None
    min_key: datetime | int | None = None
    max_key: datetime | int | None = None
    estimated: bool = False
    reltuples: float = -1.0  # pg_class.reltuples: -1 never analyzed (14+), 0 on older servers too
    range_probes: tuple[RangeProbe, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True, slots=True)
class PartitionedTable:
    """A declaratively range-partitioned table on one time or integer column, as the catalog says."""

    oid: int
    schema: str
    name: str
    key_column: str
    key_type: str
    partitions: tuple[Partition, ...] = ()
    default: DefaultPartition | None = None
    # Integer keys: the largest key value in use ("now" for an integer range).
    current_key: int | None = None
    partman_premake: int | None = None
    server_version: int = 150000
    # The session's TimeZone when discovered: timestamptz bounds are shown in it.
    time_zone: str = ""
    # Why part of this table could not be read (a lock or statement timeout on a probe), or ''.
    problem: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_time(self) -> bool:
        return self.key_type in TIME_KEYS

    @property
    def managed_by_partman(self) -> bool:
        return self.partman_premake is not None

    @property
    def session_zone(self) -> tzinfo | None:
        return zone_named(self.time_zone)


@lru_cache(maxsize=64)
def zone_named(name: str) -> tzinfo | None:
    """The IANA zone PostgreSQL's TimeZone names, or None (a POSIX spec such as '<+03>-03')."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; odd names raise the others
        return None


@dataclass(frozen=True, slots=True)
class PlannedStatement:
    """One DDL statement, what it does and why; applied alone in its own transaction.

    The SQL text is derived from the fields (quoted here), never stored, so a statement handed
    back to apply() cannot carry anything but a quoted name and a quoted bound.
    """

    action: Literal["create_partition", "detach_partition", "drop_partition"]
    schema: str
    table_name: str
    table_oid: int
    part_schema: str
    part_name: str
    why: str
    key_type: str = ""
    lower: str | None = None
    upper: str | None = None
    concurrently: bool = False

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.table_name}"

    @property
    def partition(self) -> str:
        return f"{self.part_schema}.{self.part_name}"

    @property
    def sql(self) -> str:
        parent = f"{quote_ident(self.schema)}.{quote_ident(self.table_name)}"
        child = f"{quote_ident(self.part_schema)}.{quote_ident(self.part_name)}"
        if self.action == "create_partition":
            lo, hi = _bound_sql(self.lower, self.key_type), _bound_sql(self.upper, self.key_type)
            return f"CREATE TABLE {child} PARTITION OF {parent} FOR VALUES FROM ({lo}) TO ({hi})"
        if self.action == "detach_partition":
            return f"ALTER TABLE {parent} DETACH PARTITION {child}" + (" CONCURRENTLY" if self.concurrently else "")
        return f"DROP TABLE {child}"


def _bound_sql(text: str | None, key_type: str) -> str:
    if text is None:
        raise ValueError("a partition bound is missing")
    if key_type in INT_KEYS:
        return str(int(text))
    return quote_literal(text)


@dataclass(slots=True)
class TableAnalysis:
    """What one table needs under its policy: partitions to create, partitions past retention."""

    table: PartitionedTable
    policy: PartitionPolicy
    step: Step | None
    zone: tzinfo | None = None
    ahead: int = 0
    to_create: list[tuple[datetime | int, datetime | int]] = field(default_factory=list)
    blocked_by_default: list[tuple[datetime | int, datetime | int]] = field(default_factory=list)
    retention_due: list[Partition] = field(default_factory=list)


def quote_ident(name: str) -> str:
    """PostgreSQL's identifier quoting (always quoted): double any quote, wrap in quotes."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def cut_zone(table: PartitionedTable) -> tzinfo | None:
    """The zone whose calendar a timestamptz table's recent bounds were cut in: the session's
    TimeZone or UTC, whichever puts them all at midnight (else at one time of day); None if neither.

    The session zone only says how the server prints the bounds: a table cut at UTC midnight and
    read in Europe/Paris shows 02:00+02 in summer and 01:00+01 in winter.
    """
    if table.key_type != "timestamptz":
        return None
    bounds = [b for p in sorted_bounded(table.partitions)[-6:] for b in (p.lower, p.upper)]
    zones = [z for z in (table.session_zone, timezone.utc) if z is not None]
    times = [(z, {b.astimezone(z).time() for b in bounds}) for z in zones if bounds]
    for z, seen in times:
        if seen == {time(0)}:
            return z
    return next((z for z, seen in times if len(seen) == 1), None)


def infer_step(parts: tuple[Partition, ...], zone: tzinfo | None = None) -> Step | None:
    """The most common width among the last few bounded partitions (what the DBA has been using),
    measured on the calendar of `zone` so that a month across a DST change is still a month."""
    bounded = [p for p in sorted_bounded(parts)][-6:]
    counts: dict[Step, int] = {}
    for p in bounded:
        step = _width(_in_zone(p.lower, zone), _in_zone(p.upper, zone))
        if step is not None:
            counts[step] = counts.get(step, 0) + 1
    return max(counts, key=lambda s: counts[s]) if counts else None


def _width(lo: datetime | int, hi: datetime | int) -> Step | None:
    if isinstance(lo, int):
        return Step(width=hi - lo) if hi > lo else None
    if lo.time() == hi.time() and lo.day == hi.day and (hi.year, hi.month) != (lo.year, lo.month):
        return Step(months=(hi.year - lo.year) * 12 + hi.month - lo.month)
    if lo.time() == hi.time():
        return Step(days=(hi.date() - lo.date()).days) if hi.date() > lo.date() else None
    # Through UTC: aware datetimes sharing one tzinfo subtract as wall clocks, not as instants.
    seconds = int((_in_zone(hi, timezone.utc) - _in_zone(lo, timezone.utc)).total_seconds())
    return Step(seconds=seconds) if seconds > 0 else None


def _in_zone(value: datetime | int, zone: tzinfo | None) -> datetime | int:
    if isinstance(value, datetime) and zone is not None and value.tzinfo is not None:
        return value.astimezone(zone)
    return value


def sorted_bounded(parts: tuple[Partition, ...]) -> list[Partition]:
    return sorted((p for p in parts if p.lower is not None and p.upper is not None), key=lambda p: p.lower)


def policy_for(table: PartitionedTable, policies: list[PartitionPolicy]) -> PartitionPolicy:
    """The first policy whose pattern matches schema.table; defaults (premake 4, no retention) otherwise."""
    for policy in policies:
        if policy.matches(table.qualified):
            return policy
    return PartitionPolicy()


def current_point(table: PartitionedTable, now: datetime) -> datetime | int | None:
    """'Now' in the key's terms: the clock for time keys, the largest key in use for integers."""
    if not table.is_time:
        if table.current_key is not None:
            return table.current_key
        bounded = sorted_bounded(table.partitions)
        return bounded[0].lower if bounded else None
    sample = next((p.lower for p in sorted_bounded(table.partitions)), None)
    if isinstance(sample, datetime) and sample.tzinfo is None:
        # timestamp/date keys hold wall-clock values; compare in UTC wall clock.
        return now.astimezone(timezone.utc).replace(tzinfo=None)
    return now


def analyse(table: PartitionedTable, policy: PartitionPolicy, now: datetime) -> TableAnalysis:
    bounded = sorted_bounded(table.partitions)
    zone = cut_zone(table)
    step = parse_interval(policy.interval) if policy.interval is not None else infer_step(table.partitions, zone)
    result = TableAnalysis(table=table, policy=policy, step=step, zone=zone)
    point = current_point(table, now)
    if not bounded or step is None or point is None:
        return result
    premake = table.partman_premake if table.managed_by_partman else policy.premake
    result.ahead = sum(1 for p in bounded if p.lower > point)
    if not any(p.upper is None for p in table.partitions):  # a MAXVALUE partition already covers the future
        _plan_future(result, bounded[-1].upper, point, premake)
    if policy.retention is not None:
        cutoff = add_step(point, parse_interval(policy.retention), -1, zone)
        result.retention_due = [p for p in bounded if p.upper <= cutoff]
    return result


def _plan_future(result: TableAnalysis, last_upper: datetime | int, point: datetime | int, premake: int) -> None:
    ahead, lower = result.ahead, last_upper
    while ahead < premake and len(result.to_create) + len(result.blocked_by_default) < MAX_NEW_PER_TABLE:
        upper = add_step(lower, result.step, zone=result.zone)
        if _overlaps_default(result.table.default, lower, upper):
            # Not counted as ahead: it will not exist until someone moves the default's rows.
            result.blocked_by_default.append((lower, upper))
        else:
            result.to_create.append((lower, upper))
            ahead += lower > point
        lower = upper


def _overlaps_default(default: DefaultPartition | None, lower: datetime | int, upper: datetime | int) -> bool:
    """Would CREATE ... PARTITION OF fail because the default partition holds rows in [lower, upper)?

    An exists probe on exactly this range answers first (a default too big to read has only those
    probes); then the key range read from a small default. With neither, the plan assumes no
    conflict and the CREATE itself refuses if there is one.
    """
    if default is None:
        return False
    probed = next((has_rows for lo, hi, has_rows in default.range_probes if (lo, hi) == (lower, upper)), None)
    if probed is not None:
        return probed
    if not default.rows or default.min_key is None or default.max_key is None:
        return False
    return default.min_key < upper and default.max_key >= lower


def bound_text(value: datetime | int, key_type: str) -> str:
    """A bound as the server reads it back: ISO text with its offset, or the integer."""
    if isinstance(value, int):
        return str(value)
    if key_type == "date":
        return value.strftime("%Y-%m-%d")
    return value.isoformat(sep=" ")


def partition_name(table: PartitionedTable, lower: datetime | int, step: Step, zone: tzinfo | None = None) -> str:
    """pg_partman-style names: events_p20250101, events_p20250101_1200, ids_p1000000 (<= 63 bytes),
    dated by the calendar of `zone`, the zone the bounds were cut in."""
    lower = _in_zone(lower, zone)
    if isinstance(lower, int):
        suffix = f"_p{lower}".replace("-", "m")
    elif step.seconds and (step.seconds % 86400):
        suffix = lower.strftime("_p%Y%m%d_%H%M")
    else:
        suffix = lower.strftime("_p%Y%m%d")
    base = table.name.encode()[: PG_NAME_MAX - len(suffix)].decode(errors="ignore")
    return base + suffix


def plan(tables: list[PartitionedTable], policies: list[PartitionPolicy], now: datetime) -> list[PlannedStatement]:
    """The DDL that brings every table in line with its policy; pg_partman's tables are left alone."""
    out: list[PlannedStatement] = []
    for table in tables:
        if table.managed_by_partman:
            continue
        analysis = analyse(table, policy_for(table, policies), now)
        out += _create_statements(analysis)
        out += _retention_statements(analysis)
    return out


def _create_statements(a: TableAnalysis) -> list[PlannedStatement]:
    t, out = a.table, []
    if a.step is None:
        return out
    premake = t.partman_premake if t.managed_by_partman else a.policy.premake
    why = f"premake {premake}: {a.ahead} partition(s) ahead of now, interval {a.step.describe()}"
    for lower, upper in a.to_create:
        out.append(PlannedStatement(
            "create_partition", t.schema, t.name, t.oid, t.schema, partition_name(t, lower, a.step, a.zone), why,
            key_type=t.key_type, lower=bound_text(lower, t.key_type), upper=bound_text(upper, t.key_type)))
    return out


def _retention_statements(a: TableAnalysis) -> list[PlannedStatement]:
    t, out = a.table, []
    # DETACH ... CONCURRENTLY (14+) takes only SHARE UPDATE EXCLUSIVE on the parent, but
    # PostgreSQL refuses it while the table has a default partition.
    concurrently = t.server_version >= 140000 and t.default is None
    for p in a.retention_due:
        why = f"retention {a.policy.retention}: every row is older than the retention window (upper bound {p.upper})"
        out.append(PlannedStatement("detach_partition", t.schema, t.name, t.oid, p.schema, p.name, why,
                                    concurrently=concurrently))
        if not a.policy.keep_table:
            out.append(PlannedStatement("drop_partition", t.schema, t.name, t.oid, p.schema, p.name, why))
    return out
