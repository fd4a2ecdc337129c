"""Findings: stable fingerprints, upsert by fingerprint, auto-resolve, outbox, one JSON shape.

`record_run` is the hot path of every sweep: one transaction per instance run, a handful of
set-based statements whatever the number of findings, COPY for time series.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import asyncpg

from app.collector_state import StateWrite
from collectors.spec import Finding, Result

STATES = ("open", "acknowledged", "silenced", "resolved")
SEVERITIES = ("info", "warning", "critical")
QUERY_TEXT_MAX = 10_000


def fingerprint(instance_id: int, check: str, obj: str) -> str:
    return hashlib.sha256(f"{instance_id}\x1f{check}\x1f{obj}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """What the write path needs to know about the instance (for labels and keys)."""

    id: int
    name: str
    engine: str
    tags: dict[str, str]


@dataclass(slots=True)
class RunOutcome:
    opened: int = 0
    resolved: int = 0
    open_total: int = 0


# One statement for all of an instance's collector runs of a sweep: read the live findings, bump
# last_seen of the unchanged ones, upsert the new or changed ones, resolve what a successful run no
# longer sees, write the outbox rows for changes, small series and the run rows. A single statement
# is atomic on its own, so there is no BEGIN/COMMIT; data-modifying CTEs all see the snapshot from
# before the statement. Per run this was 7 store round trips, then 1 (profile in
# docs/benchmarks.md); batching the runs makes it 1 per instance.
#
# `runs` rows with status null only carry a collector's timestamp (the retry of findings whose
# cheap last_seen bump found nothing to bump): no run row, nothing resolved.
# `light` findings are unchanged since the caller last wrote them at `p` (the run's previous
# timestamp): only last_seen moves, and only if the row is still live, still this collector's and
# still as that write left it (last_seen = p, so no other writer has been there since); the ones
# that do not match come back in `retry` and are written in full by the caller.
_RECORD = """
with runs as (
    select * from json_to_recordset($2::json)
        as u(c text, ts timestamptz, ms float8, st text, e text, n int, p timestamptz, l json, rs bool)
), seen as (
    select x.*, runs.ts from (
        select *, row_number() over () as i from json_to_recordset($3::json)
            as u(f text, c text, k text, o text, s text, t text, d jsonb, r text, lab jsonb, ann jsonb)) x
    join runs on runs.c = x.c
), light as (
    select runs.c, runs.ts, runs.p, x.f from runs, json_array_elements_text(coalesce(runs.l, '[]')) as x(f)
), live as (
    select id, fingerprint, collector, severity from findings
    where instance_id = $1::int and state <> 'resolved'
      and collector in (select c from runs where st = 'ok' union select c from seen)
), touched as (
    update findings set last_seen = light.ts from light
    where findings.fingerprint = light.f and findings.collector = light.c and findings.state <> 'resolved'
      and findings.last_seen = light.p
    returning findings.fingerprint
), up as (
    insert into findings (fingerprint, instance_id, collector, "check", object, severity, state, title,
                          details, recommendation, first_seen, last_seen, opened_at)
    select f, $1, c, k, o, s, 'open', t, d, r, ts, ts, ts from seen
    on conflict (fingerprint) do update set
        collector = excluded.collector, severity = excluded.severity, title = excluded.title,
        details = excluded.details, recommendation = excluded.recommendation, last_seen = excluded.last_seen,
        state = case when findings.state = 'resolved' then 'open' else findings.state end,
        opened_at = case when findings.state = 'resolved' then excluded.opened_at else findings.opened_at end,
        resolved_at = null
    returning id, fingerprint, opened_at, severity
), gone as (
    update findings set state = 'resolved', resolved_at = runs.ts, state_by = 'dbfleet', state_at = runs.ts,
           state_note = 'no longer seen'
    from live join runs on runs.c = live.collector and runs.st = 'ok' and runs.rs is not false
    where findings.id = live.id
      and not exists (select 1 from seen where seen.f = live.fingerprint and seen.c = live.collector)
      and not exists (select 1 from light where light.f = live.fingerprint and light.c = live.collector)
    returning findings.id, findings.fingerprint, findings."check", findings.object, findings.severity,
              findings.title, findings.recommendation, findings.opened_at, runs.ts as ended
), fired as (
    insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
    select up.id, up.fingerprint, 'firing', up.severity, seen.lab, seen.ann, up.opened_at, null
    from up join seen on seen.f = up.fingerprint
    left join live on live.fingerprint = up.fingerprint and live.collector = seen.c
    where live.fingerprint is null or live.severity <> up.severity
    order by seen.i
    returning 1
), cleared as (
    insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
    select id, fingerprint, 'resolved', severity,
           $4::jsonb || jsonb_build_object('alertname', "check", 'severity', severity, 'instance', $5::text,
                                           'engine', $6::text, 'object', object),
           jsonb_build_object('summary', title, 'description', '', 'recommendation', recommendation),
           opened_at, ended
    from gone
    returning 1
), series as (
    insert into samples (ts, instance_id, collector, metric, object, value)
    select runs.ts, $1, runs.c, x.m, coalesce(x.o, ''), x.v::float8
    from json_to_recordset($7::json) as s(c text, m json, o json, v json) join runs on runs.c = s.c,
         unnest(array(select json_array_elements_text(s.m)), array(select json_array_elements_text(s.o)),
                array(select json_array_elements_text(s.v))) as x(m, o, v)
), stats as (
    insert into query_stats (ts, instance_id, query_id, username, dbname, interval_s, calls, total_ms, rows,
                             shared_blks_hit, shared_blks_read, temp_blks_written)
    select runs.ts, $1, x.q, x.u, x.d, x.i::float8, x.c::int8, x.ms::float8, x.r::int8, x.h::int8, x.rd::int8,
           x.tw::int8
    from json_to_recordset($8::json) as s(rc text, cols json) join runs on runs.c = s.rc,
         unnest(array(select json_array_elements_text(s.cols->0)), array(select json_array_elements_text(s.cols->1)),
                array(select json_array_elements_text(s.cols->2)), array(select json_array_elements_text(s.cols->3)),
                array(select json_array_elements_text(s.cols->4)), array(select json_array_elements_text(s.cols->5)),
                array(select json_array_elements_text(s.cols->6)), array(select json_array_elements_text(s.cols->7)),
                array(select json_array_elements_text(s.cols->8)), array(select json_array_elements_text(s.cols->9)))
             as x(q, u, d, i, c, ms, r, h, rd, tw)
), texts as (
    insert into query_texts (instance_id, query_id, text)
    select $1, q, t from json_to_recordset($9::json) as u(q text, t text)
    on conflict do nothing
), run as (
    insert into collector_runs (instance_id, collector, started_at, duration_ms, status, error, findings)
    select $1, c, ts, ms, st, e, n from runs where st is not null
), state as (
    select * from json_to_recordset($10::json) as u(c text, q bigint, b jsonb, p jsonb, n int)
), state_base as (
    insert into collector_state as cs (instance_id, collector, seq, base_seq, base, patch_bytes, updated_at)
    select $1, c, q, q, b, 0, now() from state where b is not null
    on conflict (instance_id, collector) do update set seq = excluded.seq, base_seq = excluded.seq,
        base = excluded.base, patch_bytes = 0, updated_at = excluded.updated_at
), state_compacted as (
    delete from collector_state_patches
    where instance_id = $1 and collector in (select c from state where b is not null)
), state_bumped as (
    update collector_state cs set seq = state.q, patch_bytes = cs.patch_bytes + state.n, updated_at = now()
    from state where state.p is not null and cs.instance_id = $1 and cs.collector = state.c
), state_patch as (
    insert into collector_state_patches (instance_id, collector, seq, patch)
    select $1, c, q, p from state where p is not null
)
select (select count(*) from fired) as opened, (select count(*) from cleared) as resolved,
       (select coalesce(json_agg(f), '[]') from light
        where f not in (select fingerprint from touched)) as retry
"""

# Rows travel as one JSON text per kind rather than one array per column: asyncpg's array encoder
# makes an isinstance(..., Iterable) ABC check per element, which was the top CPU item of a sweep
# (cProfile: 256k __instancecheck__ calls per 200-instance sweep); json.dumps is C code.
# Series at least this long go by COPY (in a transaction with the statement above); shorter
# ones ride in the statement, which costs one round trip instead of BEGIN, COPY, COMMIT.
COPY_MIN_ROWS = 500

_RUN = """
insert into collector_runs (instance_id, collector, started_at, duration_ms, status, error, findings)
values ($1, $2, $3, $4, $5, $6, $7)
"""

_SAMPLE_COLUMNS = ("ts", "instance_id", "collector", "metric", "object", "value")
_STAT_COLUMNS = ("ts", "instance_id", "query_id", "username", "dbname", "interval_s", "calls", "total_ms", "rows",
                 "shared_blks_hit", "shared_blks_read", "temp_blks_written")


def _labels(inst: InstanceRef, f: Finding) -> dict[str, str]:
    return {**inst.tags, "alertname": f.check, "severity": str(f.severity), "instance": inst.name,
            "engine": inst.engine, "object": f.object}


def _annotations(f: Finding) -> dict[str, str]:
    return {"summary": f.title, "description": _describe(f.details), "recommendation": f.recommendation}


def _describe(details: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in details.items() if k != "sql") if isinstance(details, dict) else ""


@dataclass(slots=True)
class RunRecord:
    """One collector run of an instance, written together with the instance's other runs."""

    collector: str
    started_at: datetime
    duration_ms: float
    result: Result | None = None  # None: a failed run, which resolves nothing
    status: str = "ok"
    error: str | None = None
    # What this writer last stored for the collector on this instance: (that run's started_at,
    # fingerprint -> finding). Findings equal to those only have their last_seen bumped.
    known: tuple[datetime, dict[str, Finding]] | None = None
    seen: dict[str, Finding] = field(default_factory=dict)  # filled in by record_runs
    # False when the run had no baseline to judge by: its findings are stored, nothing is resolved.
    resolves: bool = True
    # The collector's state change, written in the same statement (app/collector_state.py).
    state: StateWrite | None = None


async def record_run(conn: asyncpg.Connection, inst: InstanceRef, collector: str, result: Result,
                     started_at: datetime, duration_ms: float) -> RunOutcome:
    """Store one successful collector run: findings upserted and resolved, outbox, series, run row."""
    run = RunRecord(collector, started_at, duration_ms, result)
    opened, resolved = await record_runs(conn, inst, [run])
    return RunOutcome(opened=opened, resolved=resolved, open_total=len(run.seen))


async def record_runs(conn: asyncpg.Connection, inst: InstanceRef, runs: list[RunRecord]) -> tuple[int, int]:
    """Store an instance's collector runs (ok or failed) in one statement; (opened, resolved)."""
    for r in runs:
        if r.result is not None:
            r.seen = {fingerprint(inst.id, f.check, f.object): f for f in r.result.findings}
    fps = [fp for r in runs for fp in r.seen]
    if len(runs) > 1 and (len(set(fps)) < len(fps) or len({r.collector for r in runs}) < len(runs)):
        # Two runs claiming one finding (or one collector twice): write them in order, as each
        # would have been written on its own.
        totals = [await record_runs(conn, inst, [r]) for r in runs]
        return sum(t[0] for t in totals), sum(t[1] for t in totals)
    batch = _Batch(inst)
    for r in runs:
        batch.add(r)
    row = await batch.write(conn)
    opened, resolved = row["opened"], row["resolved"]
    retry = row["retry"]
    if retry := set(json.loads(retry) if isinstance(retry, str) else retry):
        # Unchanged here but not as we left them in the store (resolved by hand, another worker
        # wrote them since...): write them in full, as if they had changed.
        again = _Batch(inst)
        for r in runs:
            if mine := [fp for fp in r.seen if fp in retry]:
                again.add_full(r, mine)
        opened += (await again.write(conn))["opened"]
    return opened, resolved


class _Batch:
    """The JSON parameters of one _RECORD statement, and the COPYs that go with it."""

    def __init__(self, inst: InstanceRef):
        self.inst = inst
        self.runs: list[dict[str, Any]] = []
        self.found: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.texts: list[dict[str, Any]] = []
        self.states: list[str] = []
        self.copies: list[tuple[str, tuple[str, ...], list[tuple]]] = []

    def add(self, r: RunRecord) -> None:
        row = {"c": r.collector, "ts": r.started_at.isoformat(), "ms": r.duration_ms, "st": r.status,
               "e": r.error[:2000] if r.error is not None else None, "n": len(r.seen)}
        if not r.resolves:
            row["rs"] = False
        self.runs.append(row)
        if r.state is not None:
            self.states.append(r.state.as_json_text())
        if r.result is None:
            return
        prev_at, prev = r.known or (None, {})
        light = []
        for fp, f in r.seen.items():
            if prev.get(fp) == f:
                light.append(fp)
            else:
                self.found.append(self._full(r.collector, fp, f))
        if light:
            row["p"], row["l"] = prev_at.isoformat(), light
        self._series(r)

    def add_full(self, r: RunRecord, fps: list[str]) -> None:
        self.runs.append({"c": r.collector, "ts": r.started_at.isoformat(), "st": None})
        self.found += [self._full(r.collector, fp, r.seen[fp]) for fp in fps]

    def _full(self, collector: str, fp: str, f: Finding) -> dict[str, Any]:
        return {"f": fp, "c": collector, "k": f.check, "o": f.object, "s": str(f.severity), "t": f.title,
                "d": f.details, "r": f.recommendation, "lab": _labels(self.inst, f), "ann": _annotations(f)}

    def _series(self, r: RunRecord) -> None:
        result, c, iid = r.result, r.collector, self.inst.id
        values = [float(s.value) for s in result.samples]
        # JSON has no NaN/Infinity; COPY carries them.
        if len(values) >= COPY_MIN_ROWS or not all(map(math.isfinite, values)):
            self.copies.append(("samples", _SAMPLE_COLUMNS, [
                (r.started_at, iid, c, s.metric, s.object, v) for s, v in zip(result.samples, values)]))
        elif values:
            # Columns rather than one object per row: a third of the encoding time.
            self.samples.append({"c": c, "m": [s.metric for s in result.samples],
                                 "o": [s.object for s in result.samples], "v": values})
        if len(result.query_stats) >= COPY_MIN_ROWS:
            self.copies.append(("query_stats", _STAT_COLUMNS, [(r.started_at, iid, *q) for q in _stat_rows(result)]))
        elif result.query_stats:
            self.stats.append({"rc": c, "cols": list(zip(*_stat_rows(result)))})
        self.texts += [{"q": q.query_id, "t": q.text[:QUERY_TEXT_MAX]} for q in result.query_stats if q.text]

    async def write(self, conn: asyncpg.Connection) -> Any:
        inst = self.inst
        args = (inst.id, _json(self.runs), _json(self.found), json.dumps(inst.tags), inst.name, inst.engine,
                _json(self.samples), _json(self.stats), _json(self.texts), f"[{','.join(self.states)}]")
        if not self.copies:
            return await conn.fetchrow(_RECORD, *args)
        async with conn.transaction():
            row = await conn.fetchrow(_RECORD, *args)
            for table, columns, records in self.copies:
                await conn.copy_records_to_table(table, columns=columns, records=records)
        return row


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=str, allow_nan=False)


def _stat_rows(result: Result) -> list[tuple]:
    return [(q.query_id, q.user, q.database, q.interval_s, q.calls, q.total_ms, q.rows, q.shared_blks_hit,
             q.shared_blks_read, q.temp_blks_written) for q in result.query_stats]


async def record_failure(conn: asyncpg.Connection, inst: InstanceRef, collector: str, status: str,
                         error: str, started_at: datetime, duration_ms: float) -> None:
    """A failed run resolves nothing; it only leaves its run row."""
    await conn.execute(_RUN, inst.id, collector, started_at, duration_ms, status, error[:2000], 0)


def resolved_outbox(finding: Any, inst: Any, now: datetime) -> Any:
    """The outbox row for a finding resolved by hand (the ORM path of the API)."""
    from app.models import Outbox

    ref = InstanceRef(inst.id, inst.name, inst.engine, dict(inst.tags or {}))
    f = Finding(finding.check, finding.object, finding.severity, finding.title, {}, finding.recommendation)
    return Outbox(finding_id=finding.id, fingerprint=finding.fingerprint, status="resolved", severity=finding.severity,
                  labels=_labels(ref, f), annotations=_annotations(f), starts_at=finding.opened_at, ends_at=now)


async def retire_findings(session: Any, inst: Any, note: str, now: datetime | None = None) -> int:
    """Resolve an instance's live findings (and their alerts) when it is deleted, disabled or
    gone from the cloud: sweeps skip it from now on, so nothing else would ever resolve them."""
    from sqlalchemy import select

    from app.models import Finding as FindingRow

    now = now or datetime.now(timezone.utc)
    live = list((await session.execute(select(FindingRow).where(
        FindingRow.instance_id == inst.id, FindingRow.state != "resolved"))).scalars())
    for f in live:
        f.state, f.resolved_at, f.state_by, f.state_at, f.state_note = "resolved", now, "dbfleet", now, note
        session.add(resolved_outbox(f, inst, now))
    return len(live)


def finding_json(row: Any, instance_name: str) -> dict[str, Any]:
    """The one JSON shape of a finding, for the API and every --json output."""
    return {
        "id": row.id, "instance": instance_name, "check": row.check, "object": row.object,
        "severity": row.severity, "state": row.state, "title": row.title, "details": row.details,
        "recommendation": row.recommendation, "first_seen": row.first_seen.isoformat(),
        "last_seen": row.last_seen.isoformat(), "opened_at": row.opened_at.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "state_by": row.state_by, "state_at": row.state_at.isoformat() if row.state_at else None,
        "state_note": row.state_note,
        "state_until": row.state_until.isoformat() if row.state_until else None,
    }
