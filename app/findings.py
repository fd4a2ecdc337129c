"""Findings: stable fingerprints, upsert by fingerprint, auto-resolve, outbox, one JSON shape.

`record_run` is the hot path of every sweep: one transaction per instance run, a handful of
set-based statements whatever the number of findings, COPY for time series.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import asyncpg

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


# One statement per run: read the live findings, upsert what was seen, resolve what was not,
# write the outbox rows for changes, small series and the run row. A single statement is atomic
# on its own, so there is no BEGIN/COMMIT; on a 200-database sweep this cut the store round trips
# from about 7 per run to 1 (profile in docs/benchmarks.md). Data-modifying CTEs all see the
# snapshot from before the statement, like the separate "live" read used to.
_RECORD = """
with live as (
    select id, fingerprint, severity from findings
    where instance_id = $1::int and collector = $2 and state <> 'resolved'
), seen as (
    select * from json_to_recordset($4::json)
        as u(f text, c text, o text, s text, t text, d jsonb, r text, lab jsonb, ann jsonb)
), up as (
    insert into findings (fingerprint, instance_id, collector, "check", object, severity, state, title,
                          details, recommendation, first_seen, last_seen, opened_at)
    select f, $1, $2, c, o, s, 'open', t, d, r, $3, $3, $3 from seen
    on conflict (fingerprint) do update set
        collector = excluded.collector, severity = excluded.severity, title = excluded.title,
        details = excluded.details, recommendation = excluded.recommendation, last_seen = excluded.last_seen,
        state = case when findings.state = 'resolved' then 'open' else findings.state end,
        opened_at = case when findings.state = 'resolved' then excluded.opened_at else findings.opened_at end,
        resolved_at = null
    returning id, fingerprint, opened_at, severity
), gone as (
    update findings set state = 'resolved', resolved_at = $3, state_by = 'dbfleet', state_at = $3,
           state_note = 'no longer seen'
    where id in (select id from live where fingerprint not in (select f from seen))
    returning id, fingerprint, "check", object, severity, title, recommendation, opened_at
), fired as (
    insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
    select up.id, up.fingerprint, 'firing', up.severity, seen.lab, seen.ann, up.opened_at, null
    from up join seen on seen.f = up.fingerprint left join live on live.fingerprint = up.fingerprint
    where live.fingerprint is null or live.severity <> up.severity
    returning 1
), cleared as (
    insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
    select id, fingerprint, 'resolved', severity,
           $5::jsonb || jsonb_build_object('alertname', "check", 'severity', severity, 'instance', $6::text,
                                           'engine', $7::text, 'object', object),
           jsonb_build_object('summary', title, 'description', '', 'recommendation', recommendation),
           opened_at, $3
    from gone
    returning 1
), series as (
    insert into samples (ts, instance_id, collector, metric, object, value)
    select $3, $1, $2, m, coalesce(o, ''), v from json_to_recordset($8::json) as u(m text, o text, v float8)
), stats as (
    insert into query_stats (ts, instance_id, query_id, username, dbname, interval_s, calls, total_ms, rows,
                             shared_blks_hit, shared_blks_read, temp_blks_written)
    select $3, $1, q, u, d, i, c, ms, r, h, rd, tw
    from json_to_recordset($9::json) as u(q text, u text, d text, i float8, c int8, ms float8, r int8, h int8,
                                          rd int8, tw int8)
), texts as (
    insert into query_texts (instance_id, query_id, text)
    select $1, q, t from json_to_recordset($10::json) as u(q text, t text)
    on conflict do nothing
), run as (
    insert into collector_runs (instance_id, collector, started_at, duration_ms, status, error, findings)
    values ($1, $2, $3, $11, 'ok', null, $12)
)
select (select count(*) from fired) as opened, (select count(*) from cleared) as resolved
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


async def record_run(conn: asyncpg.Connection, inst: InstanceRef, collector: str, result: Result,
                     started_at: datetime, duration_ms: float) -> RunOutcome:
    """Store one successful collector run: findings upserted and resolved, outbox, series, run row."""
    now = started_at
    seen = {fingerprint(inst.id, f.check, f.object): f for f in result.findings}
    found = [{"f": fp, "c": f.check, "o": f.object, "s": str(f.severity), "t": f.title, "d": f.details,
              "r": f.recommendation, "lab": _labels(inst, f), "ann": _annotations(f)} for fp, f in seen.items()]
    # JSON has no NaN/Infinity; COPY carries them.
    copy_samples = len(result.samples) >= COPY_MIN_ROWS or not all(math.isfinite(s.value) for s in result.samples)
    copy_stats = len(result.query_stats) >= COPY_MIN_ROWS
    samples = [] if copy_samples else [{"m": s.metric, "o": s.object, "v": float(s.value)} for s in result.samples]
    stats = [] if copy_stats else [dict(zip(_STAT_KEYS, r)) for r in _stat_rows(result)]
    texts = [{"q": q.query_id, "t": q.text[:QUERY_TEXT_MAX]} for q in result.query_stats if q.text]
    args = (inst.id, collector, now, _json(found), json.dumps(inst.tags), inst.name, inst.engine,
            _json(samples), _json(stats), _json(texts), duration_ms, len(seen))
    if not (copy_samples or copy_stats):
        row = await conn.fetchrow(_RECORD, *args)
    else:
        async with conn.transaction():
            row = await conn.fetchrow(_RECORD, *args)
            if copy_samples:
                await conn.copy_records_to_table("samples", columns=_SAMPLE_COLUMNS, records=[
                    (now, inst.id, collector, s.metric, s.object, float(s.value)) for s in result.samples])
            if copy_stats:
                await conn.copy_records_to_table("query_stats", columns=_STAT_COLUMNS, records=[
                    (now, inst.id, *r) for r in _stat_rows(result)])
    return RunOutcome(opened=row["opened"], resolved=row["resolved"], open_total=len(seen))


_STAT_KEYS = ("q", "u", "d", "i", "c", "ms", "r", "h", "rd", "tw")


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
    }
