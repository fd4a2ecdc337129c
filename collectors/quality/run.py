"""Running a check on a collector session: find its tables, measure, judge.

The session is the collectors' own (read-only, statement_timeout, lock_timeout); everything here
only reads. What must outlive a run (the volume history, the previous run's columns and counters)
is handed in by the caller from the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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

# A scan of fewer rows than this is cheap enough to run every few minutes (PgHero calls a table
# "large" for its missing-index advice from about 10,000 rows; a freshness check runs max() far
# more often than a report does, so we allow ten times that).
SCAN_ROWS_LIMIT = 100_000


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

    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    previous: Mapping[str, Any] | None = None
    history: Sequence[tuple[datetime, float]] = ()


async def matching_tables(conn: Connection, family: str, check: Any,
                          schemas: Sequence[str] | None = None) -> list[Table]:
    """The tables (and views) on this session matching the check's patterns, in name order."""
    rows = await conn.fetch(sql.tables_sql(family))
    out = []
    for r in rows:
        schema, name = r["schema_name"], r["table_name"]
        if schemas and schema not in schemas:
            continue
        if check.matches_table(schema, name):
            out.append(Table(schema, name))
    return out


def _param_time(family: str, at: datetime) -> datetime:
    # MySQL DATETIME has no zone: windows are given in UTC, as the loads are assumed to write them.
    return at.astimezone(timezone.utc).replace(tzinfo=None) if family == "mysql" else at


async def freshness(conn: Connection, family: str, check: FreshnessCheck, table: Table | None) -> Verdict:
    if check.loaded_at_query is not None:
        text = sql.freshness_query_sql(family, check.loaded_at_query)
        rows = await conn.fetch(text)
        row = rows[0] if rows else {}
        newest = next(iter(row.values()), None) if row else None
        label = table.label if table else check.name
        return _shown_by(verdicts.freshness(check, label, newest, row.get("dbfleet_now_tz"),
                                            row.get("dbfleet_now_local")), text)
    assert table is not None and check.loaded_at_field is not None
    text = sql.freshness_sql(family, table.quoted(family), check.loaded_at_field, check.filter)
    [row] = await conn.fetch(text)
    return _shown_by(verdicts.freshness(check, table.label, row["newest"], row.get("now_tz"), row.get("now_local")),
                     text)


async def volume(conn: Connection, family: str, check: VolumeCheck, table: Table, inputs: RunInputs) -> Verdict:
    base = baseline_for(inputs.history, inputs.now, check.min_history)
    if check.method == "count":
        assert check.loaded_at_field is not None
        start = inputs.now - timedelta(seconds=check.per.seconds)
        text = sql.volume_count_sql(family, table.quoted(family), check.loaded_at_field, check.filter)
        [row] = await conn.fetch(text, _param_time(family, start), _param_time(family, inputs.now))
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


async def completeness(conn: Connection, family: str, check: CompletenessCheck, table: Table,
                       inputs: RunInputs) -> Verdict:
    text = sql.completeness_sql(family, table.quoted(family), check.columns, check.empty_is_null,
                                check.loaded_at_field, check.filter)
    args = [_param_time(family, inputs.now - timedelta(seconds=check.window.seconds))] if check.window else []
    [row] = await conn.fetch(text, *args)
    return _shown_by(verdicts.completeness(check, table.label, row), text)


async def assertion(conn: Connection, family: str, check: AssertionCheck, table: Table | None) -> Verdict:
    query = check.query.replace("{table}", table.quoted(family)) if table else check.query
    rows = await conn.fetch(sql.assertion_sql(family, query, check.max_evidence_rows))
    return verdicts.assertion(check, table.label if table else check.name, rows)


async def schema(conn: Connection, family: str, check: SchemaCheck, table: Table, inputs: RunInputs) -> Verdict:
    rows = await conn.fetch(sql.columns_sql(family), table.schema, table.name)
    columns = {r["col"]: str(r["typ"]) for r in rows}
    previous = (inputs.previous or {}).get("baseline")
    return verdicts.schema_drift(check, table.label, columns, previous)


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


async def scan_refusal(conn: Connection, family: str, check: FreshnessCheck, table: Table,
                       rows_limit: int = SCAN_ROWS_LIMIT) -> str | None:
    """Why this freshness check would read a large table in full every run, with the index to add; None
    when its plan reads an index (or the table is small)."""
    if check.loaded_at_field is None:
        return None
    text = sql.freshness_sql(family, table.quoted(family), check.loaded_at_field, check.filter)
    rows = await conn.fetch(sql.explain_sql(family, text))
    scanned = _pg_scan(rows, table) if family == "postgres" else _mysql_scan(rows, table)
    if scanned is None:
        return None
    estimate, cost = scanned
    if family == "postgres":
        stats = await conn.fetch("select reltuples::float8 as n from pg_class c join pg_namespace n on "
                                 "n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2",
                                 table.schema, table.name)
        if stats and stats[0]["n"] and stats[0]["n"] > 0:
            estimate = max(estimate, float(stats[0]["n"]))
    if estimate < rows_limit:
        return None
    how = f"a full scan of about {estimate:,.0f} rows" + (f" (plan cost {cost:,.0f})" if cost else "")
    return (f"check {check.name}: max({check.loaded_at_field}) on {table.label} would need {how} on every run "
            f"(every {check.every}). Add the index, then define the check again: "
            f"{sql.create_index_sql(family, table.schema, table.name, check.loaded_at_field)} "
            f"Or set allow_scan: true to run it anyway.")


def _pg_scan(rows: Sequence[Mapping[str, Any]], table: Table) -> tuple[float, float] | None:
    """(rows, total cost) of a Seq Scan on the table in an EXPLAIN (FORMAT JSON), or None."""
    raw = next(iter(rows[0].values()))
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    stack = [plan]
    while stack:
        node = stack.pop()
        if node.get("Node Type") in ("Seq Scan", "Parallel Seq Scan") and node.get("Relation Name") == table.name \
                and node.get("Schema", table.schema) == table.schema:
            return float(node.get("Plan Rows", 0)), float(plan.get("Total Cost", 0))
        stack += node.get("Plans", [])
    return None


def _mysql_scan(rows: Sequence[Mapping[str, Any]], table: Table) -> tuple[float, float] | None:
    """(rows, 0) of a full table scan (type ALL) on the table in a MySQL/MariaDB EXPLAIN, or None."""
    for r in rows:
        if str(r.get("type") or "").upper() == "ALL" and r.get("table") in (table.name, None):
            return float(r.get("rows") or 0), 0.0
    return None
