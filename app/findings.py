"""Findings: stable fingerprints, upsert by fingerprint, auto-resolve, outbox, one JSON shape.

`record_runs` is the hot path of every sweep: an instance's runs are stored all or nothing, by the
named statements of app/write_statements.py composed into one, whatever the number of findings;
COPY for long time series.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app import write_statements as ws
from app.collector_state import StateWrite
from app.last_seen import Written
from app.store_codec import dumps
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


# Series at least this long go by COPY (in a transaction with the statement); shorter ones ride
# in the statement as JSON columns, which costs one round trip instead of BEGIN, COPY, COMMIT.
COPY_MIN_ROWS = 500


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
    # What this process last stored for the collector on this instance (app/last_seen.py):
    # findings equal to those only have their last_seen bumped.
    known: Written | None = None
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


async def record_runs(conn: asyncpg.Connection, inst: InstanceRef, runs: list[RunRecord],
                      as_transaction: bool = False) -> tuple[int, int]:
    """Store an instance's collector runs (ok or failed), all or nothing; (opened, resolved).

    One composed statement (app/write_statements.py), or with `as_transaction` the same named
    statements one by one in a transaction (kept to measure and test the two against each other).
    """
    for r in runs:
        if r.result is not None:
            r.seen = {fingerprint(inst.id, f.check, f.object): f for f in r.result.findings}
    fps = [fp for r in runs for fp in r.seen]
    if len(runs) > 1 and (len(set(fps)) < len(fps) or len({r.collector for r in runs}) < len(runs)):
        # Two runs claiming one finding (or one collector twice): write them in order, as each
        # would have been written on its own.
        totals = [await record_runs(conn, inst, [r], as_transaction) for r in runs]
        return sum(t[0] for t in totals), sum(t[1] for t in totals)
    if as_transaction:
        return await _Write(inst, runs).in_transaction(conn)
    return await _write_composed(conn, inst, runs)


async def _write_composed(conn: asyncpg.Connection, inst: InstanceRef, runs: list[RunRecord]) -> tuple[int, int]:
    sql, order = ws.composed()
    full: set[str] = set()
    for attempt in range(3):
        # Third time, everything in full: no bump is left to go stale.
        write = _Write(inst, runs, full, all_full=attempt == 2)
        async with conn.transaction() if write.copies else nullcontext():
            row = await conn.fetchrow(sql, *write.args(order))
            if not row["stale"]:
                for table, columns, records in write.copies:
                    await conn.copy_records_to_table(table, columns=columns, records=records)
        if not row["stale"]:
            break
        full.update(row["stale"])  # nothing was written: send those in full and try again
    opened, resolved = row["opened"], row["resolved"]
    if missed := set(row["missed"]):
        # Matched at the statement's start, changed by a concurrent writer before the bump got to
        # them: the rest is stored; write these in full, as if they had changed.
        again = _Write(inst, [], set())
        again.rows[ws.FindingUpsert] = [write.upsert(fp) for fp in missed]
        sql1, order1 = ws.separate(ws.by_name("upsert_findings"))
        opened += len(await conn.fetch(sql1, *again.args(order1)))
    return opened, resolved


class _Write:
    """An instance's runs as rows of the write statements' inputs, and the COPYs that go with them."""

    def __init__(self, inst: InstanceRef, runs: list[RunRecord], full: set[str] = frozenset(),
                 all_full: bool = False):
        self.inst = inst
        self.rows: dict[type, list] = {kind: [] for kind in ws.INPUTS}
        self.copies: list[tuple[str, list[str], list[tuple]]] = []
        self._bumped: dict[str, RunRecord] = {}
        for r in runs:
            self._add(r, full, all_full)

    def _add(self, r: RunRecord, full: set[str], all_full: bool) -> None:
        rows, c, at = self.rows, r.collector, r.started_at.isoformat()  # formatted once per run
        error = r.error[:2000] if r.error is not None else None
        rows[ws.CollectorRun].append(ws.CollectorRun(collector=c, started_at=at, duration_ms=r.duration_ms,
                                                     status=r.status, error=error, findings=len(r.seen)))
        if (w := r.state) is not None:
            if w.base is not None:
                rows[ws.StateBase].append(ws.StateBase(collector=c, seq=w.seq, base=w.base))
            else:
                rows[ws.StatePatch].append(ws.StatePatch(collector=c, seq=w.seq, patch=w.patch,
                                                         patch_bytes=len(w.patch)))
        if r.result is None:
            return
        if r.resolves and r.status == "ok":
            rows[ws.ResolvingRun].append(ws.ResolvingRun(collector=c, resolved_at=at))
        unchanged = [] if r.known is None or all_full else [fp for fp in r.known.unchanged(r.seen) if fp not in full]
        if unchanged:
            rows[ws.LastSeenBump].append(ws.LastSeenBump(collector=c, last_seen=at,
                                                         expected_last_seen=r.known.at.isoformat(), fingerprint=unchanged))
            self._bumped.update((fp, r) for fp in unchanged)
        skip = set(unchanged)
        rows[ws.FindingUpsert] += [self._upsert(r, fp, f, at) for fp, f in r.seen.items() if fp not in skip]
        self._series(r, at)

    def upsert(self, fp: str) -> ws.FindingUpsert:
        """The full row of a finding that was sent as a bump."""
        r = self._bumped[fp]
        return self._upsert(r, fp, r.seen[fp], r.started_at.isoformat())

    def _upsert(self, r: RunRecord, fp: str, f: Finding, at: str) -> ws.FindingUpsert:
        return ws.FindingUpsert(fingerprint=fp, collector=r.collector, check=f.check, object=f.object,
                                severity=str(f.severity), title=f.title, details=f.details,
                                recommendation=f.recommendation, last_seen=at, labels=_labels(self.inst, f),
                                annotations=_annotations(f))

    def _series(self, r: RunRecord, at: str) -> None:
        result, c = r.result, r.collector
        if result.samples:
            values = [float(s.value) for s in result.samples]
            # JSON has no NaN/Infinity; COPY carries them (and takes a datetime).
            copy = len(values) >= COPY_MIN_ROWS or not all(map(math.isfinite, values))
            series = ws.SampleSeries(collector=c, ts=r.started_at if copy else at,
                                     metric=[s.metric for s in result.samples],
                                     object=[s.object for s in result.samples], value=values)
            if copy:
                self.copies.append(ws.copy_records(series, self.inst.id))
            else:
                self.rows[ws.SampleSeries].append(series)
        if stats := result.query_stats:
            copy = len(stats) >= COPY_MIN_ROWS
            series = ws.QueryStatSeries(
                ts=r.started_at if copy else at, query_id=[q.query_id for q in stats], username=[q.user for q in stats],
                dbname=[q.database for q in stats], interval_s=[q.interval_s for q in stats],
                calls=[q.calls for q in stats], total_ms=[q.total_ms for q in stats], rows=[q.rows for q in stats],
                shared_blks_hit=[q.shared_blks_hit for q in stats], shared_blks_read=[q.shared_blks_read for q in stats],
                temp_blks_written=[q.temp_blks_written for q in stats])
            if copy:
                self.copies.append(ws.copy_records(series, self.inst.id))
            else:
                self.rows[ws.QueryStatSeries].append(series)
            if texts := [q for q in stats if q.text]:
                self.rows[ws.QueryTextSeries].append(ws.QueryTextSeries(
                    query_id=[q.query_id for q in texts], text=[q.text[:QUERY_TEXT_MAX] for q in texts]))

    def args(self, order: list[str]) -> list[Any]:
        inst = self.inst
        scalars = {"instance_id": inst.id,
                   "instance_labels": dumps({**inst.tags, "instance": inst.name, "engine": inst.engine})}
        by_name = {name: kind for kind, (name, _) in ws.INPUTS.items()}
        return [scalars[n] if n in scalars else ws.as_json(self.rows[by_name[n]]) for n in order]

    async def in_transaction(self, conn: asyncpg.Connection) -> tuple[int, int]:
        """The named statements one by one, in one transaction."""
        opened = resolved = 0
        async with conn.transaction():
            for statement in ws.STATEMENTS:
                if not self.rows[statement.driven_by]:
                    continue
                sql, order = ws.separate(statement)
                result = await conn.fetch(sql, *self.args(order))
                if statement.name == "bump_last_seen":
                    missed = set(self._bumped) - {r[0] for r in result}
                    self.rows[ws.FindingUpsert] += [self.upsert(fp) for fp in missed]
                elif statement.name == "upsert_findings":
                    opened = len(result)
                elif statement.name == "resolve_unseen_findings":
                    resolved = len(result)
            for table, columns, records in self.copies:
                await conn.copy_records_to_table(table, columns=columns, records=records)
        return opened, resolved


_RUN = ws.insert_values(ws.CollectorRun)


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

    now = now or datetime.now(UTC)
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
