"""The write path's statements, generated from one table of dataclass fields to store columns.

What a sweep writes for one instance travels as a few JSON parameters, one per kind of row in
`INPUTS`: a list of objects whose keys are the dataclass's field names, which are the names of
the store columns they fill (a field's metadata names another table's column where it goes
elsewhere, e.g. a finding's alert labels go to the outbox). A field typed `list[...]` is a
column of values (one JSON array per run rather than one object per row: a third of the
encoding time), unnested in SQL.

The statements in `STATEMENTS` each do one thing a DBA can name (bump last_seen, upsert
findings, resolve what is no longer seen, append samples...). `composed()` runs them all as one
statement, `separate()` gives each on its own for a transaction; tests run both and compare the
store they leave. The sweep uses the composed form: one round trip per instance, atomic on its
own. The transaction of separate statements sends 10 per instance in a steady sweep (BEGIN, 8,
COMMIT) and took 1.6-1.9x the client CPU for the same server CPU (bench/write_path.py).
"""

from __future__ import annotations

import operator
import re
import types
import typing
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any

from app.store_codec import dumps

# A timestamp field may hold its ISO text: the write path formats a run's start once and uses it
# in every row of the run, rather than the encoder calling str() on each datetime (a third of the
# encoding time). The column type comes from the first member, datetime.
Timestamp = datetime | str


def elsewhere(column: str | None = None, *, json_text: bool = False) -> dict[str, Any]:
    """Field metadata: the field fills `table.column` rather than a column of its kind's own
    table, or (json_text) holds JSON text that goes into the parameter as it is, not re-encoded."""
    return {"column": column, "json_text": json_text}


@dataclass(slots=True)
class CollectorRun:
    collector: str
    started_at: Timestamp
    duration_ms: float
    status: str
    error: str | None
    findings: int


@dataclass(slots=True)
class ResolvingRun:
    """A successful run with a baseline: what its collector no longer sees is resolved."""

    collector: str
    resolved_at: Timestamp


@dataclass(slots=True)
class FindingUpsert:
    fingerprint: str
    collector: str
    check: str
    object: str
    severity: str
    title: str
    details: Any
    recommendation: str
    last_seen: Timestamp
    labels: Any = field(metadata=elsewhere("outbox.labels"))
    annotations: Any = field(metadata=elsewhere("outbox.annotations"))


@dataclass(slots=True)
class LastSeenBump:
    """Findings unchanged since this process wrote them at `expected_last_seen`: only
    last_seen moves, and only if the row is still live, this collector's and as we left it."""

    collector: str
    last_seen: Timestamp
    expected_last_seen: Timestamp = field(metadata=elsewhere("findings.last_seen"))
    fingerprint: list[str] = field(metadata=elsewhere("findings.fingerprint"))


@dataclass(slots=True)
class SampleSeries:
    collector: str
    ts: Timestamp
    metric: list[str]
    object: list[str]
    value: list[float]


@dataclass(slots=True)
class QueryStatSeries:
    ts: Timestamp
    query_id: list[str]
    username: list[str]
    dbname: list[str]
    interval_s: list[float]
    calls: list[int]
    total_ms: list[float]
    rows: list[int]
    shared_blks_hit: list[int]
    shared_blks_read: list[int]
    temp_blks_written: list[int]


@dataclass(slots=True)
class QueryTextSeries:
    query_id: list[str]
    text: list[str]


@dataclass(slots=True)
class StateBase:
    collector: str
    seq: int
    base: Any = field(metadata=elsewhere(json_text=True))  # StateWrite.base


@dataclass(slots=True)
class StatePatch:
    collector: str
    seq: int
    patch: Any = field(metadata=elsewhere(json_text=True))  # StateWrite.patch
    patch_bytes: int = field(metadata=elsewhere("collector_state.patch_bytes"))


# The one table: kind of row -> (its name in the statements, the store table its fields fill).
INPUTS: dict[type, tuple[str, str]] = {
    CollectorRun: ("runs", "collector_runs"),
    ResolvingRun: ("resolving", "findings"),
    FindingUpsert: ("upserts", "findings"),
    LastSeenBump: ("bumps", "findings"),
    SampleSeries: ("sample_series", "samples"),
    QueryStatSeries: ("query_stat_series", "query_stats"),
    QueryTextSeries: ("query_text_series", "query_texts"),
    StateBase: ("state_bases", "collector_state"),
    StatePatch: ("state_patches", "collector_state_patches"),
}
# Scalars every statement may use: the instance's id and its alert labels (tags, name, engine).
SCALARS = {"instance_id": "int", "instance_labels": "jsonb"}
_SQL_TYPES = {str: "text", int: "int8", float: "float8", bool: "bool", datetime: "timestamptz", Any: "jsonb"}


@dataclass(frozen=True, slots=True)
class Column:
    field: str
    table: str
    column: str
    sql_type: str
    listed: bool  # a column of values, one JSON array per row of the kind
    json_text: bool  # the value is JSON text already


@cache
def columns(kind: type) -> tuple[Column, ...]:
    hints = typing.get_type_hints(kind)
    table = INPUTS[kind][1]
    out = []
    for f in fields(kind):
        hint, listed = hints[f.name], False
        if typing.get_origin(hint) is list:
            hint, listed = typing.get_args(hint)[0], True
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        where = f.metadata.get("column") or f"{table}.{f.name}"
        out.append(Column(f.name, *where.split("."), _SQL_TYPES[hint], listed, f.metadata.get("json_text", False)))
    return tuple(out)


@cache
def _getter(kind: type) -> tuple[tuple[str, ...], Any, frozenset[str]]:
    names = tuple(f.name for f in fields(kind))
    return names, operator.attrgetter(*names), frozenset(c.field for c in columns(kind) if c.json_text)


def as_json(rows: list) -> str:
    """One kind's rows as the JSON text of its parameter ('[]' when there are none)."""
    if not rows:
        return "[]"
    names, get, raw = _getter(type(rows[0]))
    if not raw:
        return dumps([dict(zip(names, get(r))) for r in rows])
    return "[" + ",".join("{" + ",".join(
        f'"{n}":{"null" if v is None else v if n in raw else dumps(v)}' for n, v in zip(names, get(r))) + "}"
        for r in rows) + "]"


def _input_cte(kind: type, param: str, gate: str) -> str:
    """`name as (select <typed columns> from json_to_recordset(param))`, lists unnested."""
    name = INPUTS[kind][0]
    cols = columns(kind)
    typed = ", ".join(f'"{c.field}" {"json" if c.listed else c.sql_type}' for c in cols)
    plain = [f'r."{c.field}"' for c in cols if not c.listed]
    listed = [c for c in cols if c.listed]
    source = f"json_to_recordset({param}::json) as r({typed})"
    if listed:
        arrays = ", ".join(f'array(select json_array_elements_text(r."{c.field}"))' for c in listed)
        names = ", ".join(f'"{c.field}"' for c in listed)
        source += f", unnest({arrays}) as x({names})"
        plain += [f'x."{c.field}"::{c.sql_type} as "{c.field}"' for c in listed]
    position = ", row_number() over () as position" if kind is FindingUpsert else ""
    return f"{name} as (select {', '.join(plain)}{position} from {source}{gate})"


@dataclass(frozen=True, slots=True)
class Statement:
    """One named write: its steps (CTE name, SQL); the last one's rows are its result."""

    name: str
    driven_by: type  # the kind of row without which it has nothing to do
    steps: tuple[tuple[str, str], ...]

    @property
    def result(self) -> str:
        return self.steps[-1][0]


def uses(sql: str) -> list[type]:
    """The kinds of input a statement's SQL reads."""
    return [k for k, (name, _) in INPUTS.items() if re.search(rf"\b{name}\b", sql)]


STATEMENTS: tuple[Statement, ...] = (
    Statement("bump_last_seen", LastSeenBump, (("bumped", """
        update findings set last_seen = bumps.last_seen from bumps
        where findings.fingerprint = bumps.fingerprint and findings.collector = bumps.collector
          and findings.state <> 'resolved' and findings.last_seen = bumps.expected_last_seen
        returning findings.fingerprint"""),)),
    Statement("upsert_findings", FindingUpsert, (
        # What was live before, to fire only for new, reopened or re-graded findings.
        ("live_before", """
        select findings.fingerprint, findings.severity from findings join upserts using (fingerprint)
        where findings.instance_id = {instance_id} and findings.state <> 'resolved'
          and findings.collector = upserts.collector"""),
        ("upserted", """
        insert into findings (fingerprint, instance_id, collector, "check", object, severity, state, title, details,
                              recommendation, first_seen, last_seen, opened_at)
        select fingerprint, {instance_id}, collector, "check", object, severity, 'open', title, details,
               recommendation, last_seen, last_seen, last_seen from upserts
        on conflict (fingerprint) do update set
            collector = excluded.collector, severity = excluded.severity, title = excluded.title,
            details = excluded.details, recommendation = excluded.recommendation, last_seen = excluded.last_seen,
            state = case when findings.state = 'resolved' then 'open' else findings.state end,
            opened_at = case when findings.state = 'resolved' then excluded.opened_at else findings.opened_at end,
            resolved_at = null
        returning id, fingerprint, opened_at, severity"""),
        ("fired", """
        insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
        select upserted.id, upserted.fingerprint, 'firing', upserted.severity, upserts.labels, upserts.annotations,
               upserted.opened_at, null
        from upserted join upserts using (fingerprint) left join live_before using (fingerprint)
        where live_before.fingerprint is null or live_before.severity <> upserted.severity
        order by upserts.position
        returning 1"""))),
    # A finding seen in this write under any collector is not resolved: it moved, it did not go.
    Statement("resolve_unseen_findings", ResolvingRun, (
        ("no_longer_seen", """
        update findings set state = 'resolved', resolved_at = resolving.resolved_at, state_by = 'dbfleet',
               state_at = resolving.resolved_at, state_note = 'no longer seen'
        from resolving
        where findings.instance_id = {instance_id} and findings.collector = resolving.collector
          and findings.state <> 'resolved'
          and not exists (select 1 from upserts where upserts.fingerprint = findings.fingerprint)
          and not exists (select 1 from bumps where bumps.fingerprint = findings.fingerprint)
        returning findings.id, findings.fingerprint, findings."check", findings.object, findings.severity,
                  findings.title, findings.recommendation, findings.opened_at, resolving.resolved_at"""),
        ("cleared", """
        insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
        select id, fingerprint, 'resolved', severity,
               {instance_labels} || jsonb_build_object('alertname', "check", 'severity', severity,
                                                              'object', object),
               jsonb_build_object('summary', title, 'description', '', 'recommendation', recommendation),
               opened_at, resolved_at
        from no_longer_seen
        returning 1"""))),
    Statement("append_samples", SampleSeries, (("samples_added", """
        insert into samples (ts, instance_id, collector, metric, object, value)
        select ts, {instance_id}, collector, metric, coalesce(object, ''), value from sample_series"""),)),
    Statement("append_query_stats", QueryStatSeries, (("query_stats_added", """
        insert into query_stats (ts, instance_id, query_id, username, dbname, interval_s, calls, total_ms, rows,
                                 shared_blks_hit, shared_blks_read, temp_blks_written)
        select ts, {instance_id}, query_id, username, dbname, interval_s, calls, total_ms, rows,
               shared_blks_hit, shared_blks_read, temp_blks_written from query_stat_series"""),)),
    Statement("keep_query_texts", QueryTextSeries, (("query_texts_kept", """
        insert into query_texts (instance_id, query_id, text)
        select {instance_id}, query_id, text from query_text_series
        on conflict do nothing"""),)),
    Statement("append_run_rows", CollectorRun, (("runs_recorded", """
        insert into collector_runs (instance_id, collector, started_at, duration_ms, status, error, findings)
        select {instance_id}, collector, started_at, duration_ms, status, error, findings from runs"""),)),
    # A new base replaces the state and the patches since the old one (first run, compaction).
    Statement("rebase_states", StateBase, (
        ("states_rebased", """
        insert into collector_state as cs (instance_id, collector, seq, base_seq, base, patch_bytes, updated_at)
        select {instance_id}, collector, seq, seq, base, 0, now() from state_bases
        on conflict (instance_id, collector) do update set seq = excluded.seq, base_seq = excluded.seq,
            base = excluded.base, patch_bytes = 0, updated_at = excluded.updated_at"""),
        ("patches_folded", """
        delete from collector_state_patches
        where instance_id = {instance_id} and collector in (select collector from state_bases)"""))),
    Statement("append_state_patches", StatePatch, (
        ("states_advanced", """
        update collector_state cs set seq = state_patches.seq, patch_bytes = cs.patch_bytes + state_patches.patch_bytes,
               updated_at = now()
        from state_patches where cs.instance_id = {instance_id} and cs.collector = state_patches.collector"""),
        ("patches_added", """
        insert into collector_state_patches (instance_id, collector, seq, patch)
        select {instance_id}, collector, seq, patch from state_patches"""))),
)


def _marks(scalars: list[str], kinds: list[type]) -> tuple[dict[str, str], list[str]]:
    """Placeholders ($n, scalars cast to their type) and the order of the arguments."""
    order = [*scalars, *(INPUTS[k][0] for k in kinds)]
    marks = {name: f"${i}" for i, name in enumerate(order, 1)}
    return {n: f"{m}::{SCALARS[n]}" if n in SCALARS else m for n, m in marks.items()}, order


@cache
def composed() -> tuple[str, list[str]]:
    """All statements as one (SQL, argument order). Nothing is written when a last_seen bump
    would not match its row (`stale`): the caller sends those findings in full and tries again,
    so a run is stored whole or not at all. `missed` are bumps that matched when the statement
    began but not when it got to them (a concurrent writer): the rest is written."""
    kinds = list(INPUTS)
    marks, order = _marks(list(SCALARS), kinds)
    ctes = [_input_cte(LastSeenBump, marks["bumps"], "").replace("bumps as", "bumps_sent as", 1),
            """stale as (
        select bumps_sent.fingerprint from bumps_sent where not exists (
            select 1 from findings where findings.fingerprint = bumps_sent.fingerprint
              and findings.collector = bumps_sent.collector and findings.state <> 'resolved'
              and findings.last_seen = bumps_sent.expected_last_seen))"""]
    gate = " where not exists (select 1 from stale)"
    ctes += [_input_cte(k, marks[INPUTS[k][0]], gate) for k in kinds if k is not LastSeenBump]
    ctes.append("bumps as (select * from bumps_sent where not exists (select 1 from stale))")
    ctes += [f"{name} as ({sql.format(**marks).strip()})" for s in STATEMENTS for name, sql in s.steps]
    sql = ("with " + ",\n".join(ctes) + """
select (select count(*) from fired) as opened, (select count(*) from cleared) as resolved,
       (select coalesce(array_agg(fingerprint), '{}') from stale) as stale,
       (select coalesce(array_agg(fingerprint), '{}') from bumps
        where fingerprint not in (select fingerprint from bumped)) as missed""")
    return sql, order


@cache
def separate(statement: Statement) -> tuple[str, list[str]]:
    """One statement on its own (SQL, argument order), for running the write as a transaction."""
    body = " ".join(sql for _, sql in statement.steps)
    kinds = uses(body)
    marks, order = _marks([n for n in SCALARS if "{" + n + "}" in body], kinds)
    ctes = [_input_cte(k, marks[INPUTS[k][0]], "") for k in kinds]
    *head, (_, last) = statement.steps
    ctes += [f"{name} as ({sql.format(**marks).strip()})" for name, sql in head]
    return ("with " + ",\n".join(ctes) + "\n") + last.format(**marks).strip(), order


def by_name(name: str) -> Statement:
    return next(s for s in STATEMENTS if s.name == name)


def insert_values(kind: type) -> str:
    """`insert into <table> (instance_id, <fields>) values ($1, ...)` for one row of a kind whose
    fields are all its own table's columns (a failed run's row)."""
    cols = columns(kind)
    names = ", ".join(f'"{c.column}"' for c in cols)
    values = ", ".join(f"${i}" for i in range(2, len(cols) + 2))
    return f"insert into {INPUTS[kind][1]} (instance_id, {names}) values ($1, {values})"


def copy_records(row: Any, instance_id: int) -> tuple[str, list[str], list[tuple]]:
    """(table, columns, records) for COPY of one series row: long series, or values JSON cannot
    carry (NaN, Infinity)."""
    cols = columns(type(row))
    values = [getattr(row, c.field) for c in cols]
    n = max(len(v) for v, c in zip(values, cols) if c.listed)
    records = [(instance_id, *(v[i] if c.listed else v for v, c in zip(values, cols))) for i in range(n)]
    return INPUTS[type(row)][1], ["instance_id", *(c.column for c in cols)], records
