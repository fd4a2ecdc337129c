"""Findings: stable fingerprints, upsert by fingerprint, auto-resolve, outbox, one JSON shape.

`record_run` is the hot path of every sweep: one transaction per instance run, a handful of
set-based statements whatever the number of findings, COPY for time series.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
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


_LIVE = "select id, fingerprint, severity from findings where instance_id = $1 and collector = $2 and state <> 'resolved'"

_UPSERT = """
insert into findings (fingerprint, instance_id, collector, "check", object, severity, state, title,
                      details, recommendation, first_seen, last_seen, opened_at)
select f, $1, $2, c, o, s, 'open', t, d::jsonb, r, $3, $3, $3
from unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
     as u(f, c, o, s, t, d, r)
on conflict (fingerprint) do update set
    collector = excluded.collector, severity = excluded.severity, title = excluded.title,
    details = excluded.details, recommendation = excluded.recommendation, last_seen = excluded.last_seen,
    state = case when findings.state = 'resolved' then 'open' else findings.state end,
    opened_at = case when findings.state = 'resolved' then excluded.opened_at else findings.opened_at end,
    resolved_at = null
returning id, fingerprint, opened_at
"""

_RESOLVE = """
update findings set state = 'resolved', resolved_at = $2, state_by = 'dbfleet', state_at = $2,
       state_note = 'no longer seen'
where id = any($1::bigint[])
returning id, fingerprint, "check", object, severity, title, recommendation, opened_at
"""

_OUTBOX = """
insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
select * from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
                     $7::timestamptz[], $8::timestamptz[])
"""

_RUN = """
insert into collector_runs (instance_id, collector, started_at, duration_ms, status, error, findings)
values ($1, $2, $3, $4, $5, $6, $7)
"""


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
    outcome = RunOutcome()
    seen = {fingerprint(inst.id, f.check, f.object): f for f in result.findings}
    async with conn.transaction():
        live = {r["fingerprint"]: r for r in await conn.fetch(_LIVE, inst.id, collector)}
        changed: list[tuple[int, Finding, datetime]] = []
        if seen:
            cols = list(zip(*((fp, f.check, f.object, str(f.severity), f.title,
                               json.dumps(f.details, default=str), f.recommendation) for fp, f in seen.items())))
            for row in await conn.fetch(_UPSERT, inst.id, collector, now, *map(list, cols)):
                before = live.get(row["fingerprint"])
                f = seen[row["fingerprint"]]
                if before is None or before["severity"] != str(f.severity):
                    changed.append((row["id"], f, row["opened_at"]))
        gone = [r["id"] for fp, r in live.items() if fp not in seen]
        resolved = await conn.fetch(_RESOLVE, gone, now) if gone else []
        await _write_outbox(conn, inst, changed, resolved, now)
        await _write_series(conn, inst.id, collector, result, now)
        await conn.execute(_RUN, inst.id, collector, started_at, duration_ms, "ok", None, len(seen))
    outcome.opened = len(changed)
    outcome.resolved = len(resolved)
    outcome.open_total = len(seen)
    return outcome


async def record_failure(conn: asyncpg.Connection, inst: InstanceRef, collector: str, status: str,
                         error: str, started_at: datetime, duration_ms: float) -> None:
    """A failed run resolves nothing; it only leaves its run row."""
    await conn.execute(_RUN, inst.id, collector, started_at, duration_ms, status, error[:2000], 0)


async def _write_outbox(conn: asyncpg.Connection, inst: InstanceRef, changed: list[tuple[int, Finding, datetime]],
                        resolved: list[asyncpg.Record], now: datetime) -> None:
    rows = [(fid, fingerprint(inst.id, f.check, f.object), "firing", str(f.severity),
             json.dumps(_labels(inst, f)), json.dumps(_annotations(f)), opened, None)
            for fid, f, opened in changed]
    for r in resolved:
        f = Finding(r["check"], r["object"], r["severity"], r["title"], {}, r["recommendation"])
        rows.append((r["id"], r["fingerprint"], "resolved", r["severity"], json.dumps(_labels(inst, f)),
                     json.dumps(_annotations(f)), r["opened_at"], now))
    if rows:
        await conn.execute(_OUTBOX, *map(list, zip(*rows)))


async def _write_series(conn: asyncpg.Connection, instance_id: int, collector: str, result: Result,
                        now: datetime) -> None:
    if result.samples:
        await conn.copy_records_to_table(
            "samples", columns=("ts", "instance_id", "collector", "metric", "object", "value"),
            records=[(now, instance_id, collector, s.metric, s.object, float(s.value)) for s in result.samples])
    if result.query_stats:
        await conn.copy_records_to_table(
            "query_stats",
            columns=("ts", "instance_id", "query_id", "username", "dbname", "interval_s", "calls", "total_ms",
                     "rows", "shared_blks_hit", "shared_blks_read", "temp_blks_written"),
            records=[(now, instance_id, q.query_id, q.user, q.database, q.interval_s, q.calls, q.total_ms,
                      q.rows, q.shared_blks_hit, q.shared_blks_read, q.temp_blks_written)
                     for q in result.query_stats])
        texts = [(q.query_id, q.text[:QUERY_TEXT_MAX]) for q in result.query_stats if q.text]
        if texts:
            await conn.execute(
                "insert into query_texts (instance_id, query_id, text) select $1, q, t "
                "from unnest($2::text[], $3::text[]) as u(q, t) on conflict do nothing",
                instance_id, [t[0] for t in texts], [t[1] for t in texts])


def resolved_outbox(finding: Any, inst: Any, now: datetime) -> Any:
    """The outbox row for a finding resolved by hand (the ORM path of the API)."""
    from app.models import Outbox

    ref = InstanceRef(inst.id, inst.name, inst.engine, dict(inst.tags or {}))
    f = Finding(finding.check, finding.object, finding.severity, finding.title, {}, finding.recommendation)
    return Outbox(finding_id=finding.id, fingerprint=finding.fingerprint, status="resolved", severity=finding.severity,
                  labels=_labels(ref, f), annotations=_annotations(f), starts_at=finding.opened_at, ends_at=now)


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
