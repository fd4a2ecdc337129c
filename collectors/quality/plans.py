"""Definition-time scan review: would a check's statement read a large table in full on every run?

The statement reviewed is the one the check will run (freshness, volume count, completeness over
its window, the assertion), read with EXPLAIN on the collectors' session. A full scan (PostgreSQL:
Seq Scan; MySQL/MariaDB: type ALL) of a table of SCAN_ROWS_LIMIT rows or more is refused, naming
the table, the estimate and, where one column would fix it, the CREATE INDEX to add.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlglot
from sqlglot import exp

from collectors.quality import sql
from collectors.quality.checks import (
    AssertionCheck,
    CompletenessCheck,
    FreshnessCheck,
    VolumeCheck,
)
from collectors.quality.run import (
    Table,
    assertion_statement,
    completeness_statement,
    freshness_statement,
    volume_statement,
)
from collectors.spec import Connection

# A scan of fewer rows than this is cheap enough to run every few minutes (PgHero calls a table
# "large" for its missing-index advice from about 10,000 rows; a check runs far more often than a
# report does, so we allow ten times that).
SCAN_ROWS_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Scan:
    """A full scan in a plan: which table, about how many rows, the plan's cost, its filter's column."""

    schema: str | None
    table: str
    rows: float
    cost: float
    column: str | None = None

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


@dataclass(frozen=True, slots=True)
class _Planned:
    text: str
    args: list[Any]
    doing: str  # what the statement does, in a DBA's words
    column: str | None  # the check's own column an index on would fix the scan
    advice: str  # what to do when no single index does
    bounded: bool = False  # a LIMIT read by primary key (the completeness row window)


async def _planned(conn: Connection, family: str, check: Any, table: Table | None, now: datetime) -> _Planned | None:
    """The statement the check runs on this table, or None when it cannot scan (counters, catalogs)."""
    every = f"every {check.every}"
    on = table.label if table else "the instance"
    if isinstance(check, FreshnessCheck):
        if check.loaded_at_field is None:
            return _Planned(freshness_statement(family, check, table), [], f"loaded_at_query ({every})", None,
                            "Restrict the query to recent rows on an indexed column.")
        return _Planned(freshness_statement(family, check, table), [],
                        f"max({check.loaded_at_field}) on {on} ({every})", check.loaded_at_field, "")
    if isinstance(check, VolumeCheck):
        if check.method != "count" or table is None:
            return None
        text, args = volume_statement(family, check, table, now)
        return _Planned(text, args, f"count(*) of rows in the last {check.per} on {on} ({every})",
                        check.loaded_at_field, "Or use method: inserts (the server's insert counters).")
    if isinstance(check, CompletenessCheck):
        assert table is not None
        stmt = await completeness_statement(conn, family, check, table, now)
        advice = ("Drop `window: all` to read the latest window only." if check.whole_table else
                  "Give loaded_at_field (an indexed column saying when a row was loaded) to read recent rows only.")
        column = check.loaded_at_field if check.window_seconds is not None else None
        return _Planned(stmt.text, stmt.args, f"the NULL share of {', '.join(check.columns)} over {stmt.window} "
                        f"of {on} ({every})", column, advice, bounded=stmt.by_key)
    if isinstance(check, AssertionCheck):
        return _Planned(assertion_statement(family, check, table), [], f"the assertion query on {on} ({every})", None,
                        "Restrict the query to recent rows on an indexed column, e.g. "
                        "`and o.created_at > now() - interval '1 hour'`.")
    return None


async def scan_refusal(conn: Connection, family: str, check: Any, table: Table | None,
                       rows_limit: int = SCAN_ROWS_LIMIT, now: datetime | None = None) -> str | None:
    """Why this check would read a large table in full on every run, with the index to add; None when
    its plan reads indexes (or only small tables)."""
    planned = await _planned(conn, family, check, table, now or datetime.now(UTC))
    if planned is None:
        return None
    rows = await conn.fetch(sql.explain_sql(family, planned.text), *planned.args)
    scans = (_pg_scans(rows) if family == "postgres" else
             _mysql_scans(rows, _aliases(planned.text, family), planned.bounded))
    large = [s for s in [await _with_stats(conn, family, s) for s in scans] if s.rows >= rows_limit]
    if not large:
        return None
    worst = max(large, key=lambda s: s.rows)
    target = table if table is not None and worst.table == table.name else None
    cost = f", plan cost {worst.cost:,.0f}" if worst.cost else ""
    how = (f"a full scan (about {worst.rows:,.0f} rows{cost})" if target is not None else
           f"a full scan of {worst.label} (about {worst.rows:,.0f} rows{cost})")
    column = planned.column if target is not None else worst.column
    schema = target.schema if target is not None else worst.schema
    if column and schema:
        index = sql.create_index_sql(family, schema, worst.table, column)
        fix = f"Add the index, then define the check again: {index}"
    else:
        fix = planned.advice
    return (f"check {check.name}: {planned.doing} would need {how} on every run. {fix} "
            f"Or set allow_scan: true to run it anyway.")


async def _with_stats(conn: Connection, family: str, scan: Scan) -> Scan:
    """PostgreSQL: a filtered Seq Scan's Plan Rows is what it returns, not what it reads; the
    table's reltuples is what it reads."""
    if family != "postgres" or scan.schema is None:
        return scan
    rows = await conn.fetch("select reltuples::float8 as n from pg_class c join pg_namespace n on "
                            "n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2", scan.schema, scan.table)
    n = float(rows[0]["n"] or 0) if rows else 0.0
    return Scan(scan.schema, scan.table, max(scan.rows, n), scan.cost, scan.column)


_FULL_INDEX_SCANS = ("Index Scan", "Index Only Scan")


def _pg_scans(rows: Sequence[Mapping[str, Any]]) -> list[Scan]:
    """Every full read of a table in an EXPLAIN (FORMAT JSON): a Seq Scan, or an index scan with no
    Index Cond (every entry, in index order) unless a Limit right above it stops it (the newest rows
    by primary key); with the plan's highest cost (a Limit on top hides what is under it)."""
    raw = next(iter(rows[0].values()))
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    out, nodes, stack = [], [], [(plan, None)]
    while stack:
        node, parent = stack.pop()
        nodes.append(node)
        kind, relation = node.get("Node Type"), node.get("Relation Name")
        full_index = kind in _FULL_INDEX_SCANS and not node.get("Index Cond") and parent != "Limit"
        if relation and (kind in ("Seq Scan", "Parallel Seq Scan") or full_index):
            out.append(Scan(node.get("Schema"), relation, float(node.get("Plan Rows", 0)), 0.0,
                            _one_column(node.get("Filter"))))
        stack += [(child, kind) for child in node.get("Plans", [])]
    cost = max(float(n.get("Total Cost", 0)) for n in nodes)
    return [Scan(s.schema, s.table, s.rows, cost, s.column) for s in out]


def _one_column(condition: str | None) -> str | None:
    """The column of a scan's filter when it names exactly one (an index on it would serve it)."""
    if not condition:
        return None
    try:
        names = {c.name for c in sqlglot.parse_one(condition, read="postgres").find_all(exp.Column)}
    except sqlglot.errors.SqlglotError:
        return None
    return names.pop() if len(names) == 1 else None


def _mysql_scans(rows: Sequence[Mapping[str, Any]], aliases: Mapping[str, tuple[str | None, str]],
                 bounded: bool) -> list[Scan]:
    """Full reads in a MySQL/MariaDB EXPLAIN: type ALL, or type index (every index entry) unless the
    statement is a LIMIT read by primary key (`bounded`: EXPLAIN shows no limit in its rows);
    derived tables (<derived2>) are our own wrappers."""
    full = ("ALL",) if bounded else ("ALL", "INDEX")
    out = []
    for r in rows:
        name = str(r.get("table") or "")
        if str(r.get("type") or "").upper() in full and name and not name.startswith("<"):
            schema, table = aliases.get(name.lower(), (None, name))
            out.append(Scan(schema, table, float(r.get("rows") or 0), 0.0))
    return out


def _aliases(text: str, family: str) -> dict[str, tuple[str | None, str]]:
    """alias (or name) -> (schema, table) of the tables a statement reads: MySQL's EXPLAIN names aliases."""
    try:
        tree = sqlglot.parse_one(text, read=family)
    except sqlglot.errors.SqlglotError:
        return {}
    return {(t.alias_or_name or t.name).lower(): (t.db or None, t.name) for t in tree.find_all(exp.Table)}
