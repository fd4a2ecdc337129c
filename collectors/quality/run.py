"""Running a check on a collector session: find its tables, measure, judge.

The session is the collectors' own (read-only, statement_timeout, lock_timeout); everything here
only reads. What must outlive a run (the volume history, the previous run's columns and counters)
is handed in by the caller from the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from collectors.quality import sql, verdicts
from collectors.quality.baseline import baseline_for
from collectors.quality.checks import (
    AssertionCheck,
    CompletenessCheck,
    FreshnessCheck,
    SchemaCheck,
    VolumeCheck,
)
from collectors.quality.verdicts import Verdict
from collectors.spec import Connection


@dataclass(frozen=True, slots=True)
class Table:
    schema: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    def quoted(self, family: str) -> str:
        return sql.qualified(family, self.schema, self.name)


@dataclass(slots=True)
class RunInputs:
    """What the store knows for this (check, instance, table): time, last details, volume history."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    previous: Mapping[str, Any] | None = None
    history: Sequence[tuple[datetime, float]] = ()


def _param_time(family: str, at: datetime) -> datetime:
    # MySQL DATETIME has no zone: windows are given in UTC, as the loads are assumed to write them.
    return at.astimezone(UTC).replace(tzinfo=None) if family == "mysql" else at


def freshness_statement(family: str, check: FreshnessCheck, table: Table | None) -> str:
    if check.loaded_at_query is not None:
        return sql.freshness_query_sql(family, check.loaded_at_query)
    assert table is not None and check.loaded_at_field is not None
    return sql.freshness_sql(family, table.quoted(family), check.loaded_at_field, check.filter)


async def freshness(conn: Connection, family: str, check: FreshnessCheck, table: Table | None) -> Verdict:
    text = freshness_statement(family, check, table)
    if check.loaded_at_query is not None:
        rows = await conn.fetch(text)
        row = rows[0] if rows else {}
        newest = next(iter(row.values()), None) if row else None
        label = table.label if table else check.name
        return _shown_by(verdicts.freshness(check, label, newest, row.get("dbfleet_now_tz"),
                                            row.get("dbfleet_now_local")), text)
    assert table is not None
    [row] = await conn.fetch(text)
    return _shown_by(verdicts.freshness(check, table.label, row["newest"], row.get("now_tz"), row.get("now_local")),
                     text)


def volume_statement(family: str, check: VolumeCheck, table: Table, now: datetime) -> tuple[str, list[Any]]:
    """The count of rows loaded in the period ending now (method count)."""
    assert check.loaded_at_field is not None
    start = now - timedelta(seconds=check.per.seconds)
    return (sql.volume_count_sql(family, table.quoted(family), check.loaded_at_field, check.filter),
            [_param_time(family, start), _param_time(family, now)])


async def volume(conn: Connection, family: str, check: VolumeCheck, table: Table, inputs: RunInputs) -> Verdict:
    base = baseline_for(inputs.history, inputs.now, check.min_history)
    if check.method == "count":
        text, args = volume_statement(family, check, table, inputs.now)
        [row] = await conn.fetch(text, *args)
        return _shown_by(verdicts.volume(check, table.label, float(row["n"]), base), text)
    rows = await conn.fetch(sql.insert_counter_sql(family), table.schema, table.name)
    counter = float(rows[0]["n"] or 0) if rows else 0.0
    prev = inputs.previous or {}
    kept = {"counter": counter, "counter_at": inputs.now.isoformat()}
    if "counter" not in prev or counter < prev["counter"]:  # first run, or the statistics were reset
        return Verdict(verdicts.PASS, None, [], [], {**kept, "baseline": "learning"})
    elapsed = (inputs.now - datetime.fromisoformat(prev["counter_at"])).total_seconds()
    if elapsed <= 0:
        return Verdict(verdicts.PASS, None, [], [], dict(prev))
    rows_per_period = (counter - prev["counter"]) * check.per.seconds / elapsed
    verdict = verdicts.volume(check, table.label, round(rows_per_period, 3), base)
    verdict.details.update(kept)
    return verdict


@dataclass(frozen=True, slots=True)
class Statement:
    """What a check will run on one table: the SQL, its parameters, and the window it reads."""

    text: str
    args: list[Any]
    window: str
    by_key: bool = False  # the newest rows by primary key: a LIMIT-bounded index read


async def completeness_statement(conn: Connection, family: str, check: CompletenessCheck, table: Table,
                                 now: datetime) -> Statement:
    """The latest window: by loaded_at_field, else the newest rows by primary key; the whole table
    only when the check asks (`window: all`) or the table has no primary key."""
    seconds = check.window_seconds
    if seconds is not None:
        text = sql.completeness_sql(family, table.quoted(family), check.columns, check.empty_is_null,
                                    check.loaded_at_field, check.filter)
        return Statement(text, [_param_time(family, now - timedelta(seconds=seconds))],
                         f"rows whose {check.loaded_at_field} is in the last {_span(seconds)}")
    key = [] if check.whole_table else [r["col"] for r in await conn.fetch(sql.primary_key_sql(family),
                                                                            table.schema, table.name)]
    text = sql.completeness_sql(family, table.quoted(family), check.columns, check.empty_is_null, None,
                                check.filter, key, check.window_rows)
    if key:
        return Statement(text, [], f"the newest {check.window_rows} rows by {', '.join(key)}", by_key=True)
    return Statement(text, [], "the whole table" + ("" if check.whole_table else " (it has no primary key)"))


async def completeness(conn: Connection, family: str, check: CompletenessCheck, table: Table,
                       inputs: RunInputs) -> Verdict:
    stmt = await completeness_statement(conn, family, check, table, inputs.now)
    [row] = await conn.fetch(stmt.text, *stmt.args)
    verdict = _shown_by(verdicts.completeness(check, table.label, row), stmt.text)
    verdict.details["window"] = stmt.window
    for f in verdict.findings:
        if isinstance(f.details, dict):
            f.details.setdefault("window", stmt.window)
    return verdict


def assertion_statement(family: str, check: AssertionCheck, table: Table | None) -> str:
    query = check.query.replace("{table}", table.quoted(family)) if table else check.query
    return sql.assertion_sql(family, query, check.max_evidence_rows)


async def assertion(conn: Connection, family: str, check: AssertionCheck, table: Table | None) -> Verdict:
    rows = await conn.fetch(assertion_statement(family, check, table))
    return verdicts.assertion(check, table.label if table else check.name, rows)


async def schema(conn: Connection, family: str, check: SchemaCheck, table: Table, inputs: RunInputs) -> Verdict:
    rows = await conn.fetch(sql.columns_sql(family), table.schema, table.name)
    columns = {r["col"]: str(r["typ"]) for r in rows}
    previous = (inputs.previous or {}).get("baseline")
    return verdicts.schema_drift(check, table.label, columns, previous)


def _span(seconds: int) -> str:
    if seconds % 86400 == 0:
        n, unit = seconds // 86400, "day"
    elif seconds % 3600 == 0:
        n, unit = seconds // 3600, "hour"
    else:
        n, unit = -(-seconds // 60), "minute"
    return f"{n} {unit}{'s' if n != 1 else ''}"


def _shown_by(verdict: Verdict, text: str) -> Verdict:
    """Each finding's evidence carries the SQL that shows it (a DBA re-runs it to see for himself)."""
    for f in verdict.findings:
        if isinstance(f.details, dict):
            f.details.setdefault("sql", text)
    return verdict


async def run_check(conn: Connection, family: str, check: Any, table: Table | None,
                    inputs: RunInputs | None = None) -> Verdict:
    """One check on one table (None: an instance-wide assertion or loaded_at_query)."""
    inputs = inputs or RunInputs()
    if isinstance(check, FreshnessCheck):
        return await freshness(conn, family, check, table)
    if table is None:
        if isinstance(check, AssertionCheck):
            return await assertion(conn, family, check, None)
        raise sql.CheckRefused(f"check {check.name} needs a table")
    if isinstance(check, VolumeCheck):
        return await volume(conn, family, check, table, inputs)
    if isinstance(check, CompletenessCheck):
        return await completeness(conn, family, check, table, inputs)
    if isinstance(check, AssertionCheck):
        return await assertion(conn, family, check, table)
    return await schema(conn, family, check, table, inputs)
