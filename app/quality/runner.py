"""Running the stored checks over this worker's shard, on the collectors' read-only sessions.

Each check is its own collector (`quality:<name>`): its findings go through the normal write
path (upsert by fingerprint, auto-resolve, outbox, routing, silences) with the check's labels
(source, pipeline...) added to the instance's tags, its measurements are samples, and its latest
result per table is a quality_check_results row, all in one transaction per check and instance.

Due checks run at their own phase within their period (collectors/quality/schedule.py), and at
most PER_INSTANCE checks of one instance run at once, each on a session of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import select

from app.db import Store
from app.findings import InstanceRef, RunRecord, record_failure, record_runs
from app.inventory.targets import password_for, target_of
from app.models import Instance
from app.quality.definitions import stored_checks
from app.settings import Settings
from app.shard import Shard
from collectors.engines.base import ConnectFailed, SessionLimits
from collectors.engines.pool import ConnectionPool
from collectors.quality import run as quality_run
from collectors.quality.checks import collector_name
from collectors.quality.run import RunInputs, Table
from collectors.quality.schedule import is_due, phase_s
from collectors.quality.sql import CheckRefused, family_of, tables_sql
from collectors.quality.verdicts import Verdict, table_gone
from collectors.spec import Connection, Result

log = logging.getLogger(__name__)
FAILED, NO_TABLES = "failed", "no_tables"
WHOLE_FLEET = Shard()
# One check at a time on a monitored database, as a DBA expects of a monitoring tool: the checks
# of one instance run one after another on its one session.
PER_INSTANCE = 1


@dataclass
class CheckOutcome:
    check: str
    kind: str
    instance: str
    object: str
    state: str  # pass warn error failed no_tables
    value: float | None = None
    title: str = ""


@dataclass
class ChecksSummary:
    outcomes: list[CheckOutcome] = field(default_factory=list)
    wall_s: float = 0.0

    def failures(self, warn_error: bool = False) -> list[CheckOutcome]:
        """What makes `dbfleet checks run` exit non-zero: errors and checks that could not run."""
        bad = {"error", FAILED} | ({"warn"} if warn_error else set())
        return [o for o in self.outcomes if o.state in bad]


def pool_for(settings: Settings) -> ConnectionPool:
    w = settings.worker
    return ConnectionPool(SessionLimits(connect_timeout_s=w.connect_timeout_s,
                                        statement_timeout_ms=w.statement_timeout_ms,
                                        lock_timeout_ms=w.lock_timeout_ms),
                          backoff_base_s=w.backoff_base_s, backoff_max_s=w.backoff_max_s)


async def scoped_instances(store: Store, check: Any | None = None, shard: Shard = WHOLE_FLEET,
                           names: list[str] | None = None) -> list[Instance]:
    """Enabled PostgreSQL / MySQL-family entries of this shard, in the check's scope if given."""
    stmt = select(Instance).where(Instance.enabled.is_(True), Instance.gone_at.is_(None)).order_by(Instance.id)
    if names:
        stmt = stmt.where(Instance.name.in_(names))
    async with store.sessions() as session:
        rows = list((await session.execute(stmt)).scalars())
    out = []
    for inst in rows:
        try:
            family_of(inst.engine)
        except CheckRefused:
            continue
        if shard.owns(inst.id) and (check is None or check.applies(inst.name, inst.tags or {})):
            out.append(inst)
    return out


def entry_schemas(inst: Instance) -> list[str] | None:
    """MySQL: the schemas the entry names (None: all); PostgreSQL: its database holds them all."""
    if family_of(inst.engine) != "mysql":
        return None
    named = [*([inst.dbname] if inst.dbname else []), *(inst.schemas or [])]
    return named or None


async def list_tables(conn: Connection, inst: Instance) -> list[Table]:
    family = family_of(inst.engine)
    schemas = entry_schemas(inst)
    return [Table(r["schema_name"], r["table_name"]) for r in await conn.fetch(tables_sql(family))
            if not schemas or r["schema_name"] in schemas]


# An instance's table list is read again after this long. The checks spread over their periods, so
# nearly every run was its own tick, and listing the tables was most of a cheap check's cost (the
# bench: 94 % of dbfleet's statement time). A table created since is checked this much later at most.
TABLES_TTL_S = 300.0


class QualityRunner:
    """Runs checks; holds read-only sessions per instance across runs (like the Sweeper)."""

    def __init__(self, store: Store, settings: Settings, shard: Shard = WHOLE_FLEET, per_instance: int = PER_INSTANCE):
        self.store = store
        self.settings = settings
        self.shard = shard
        self.per_instance = max(1, per_instance)
        self.pool = pool_for(settings)
        self._tables: dict[int, tuple[float, list[Table]]] = {}  # instance id: (monotonic read time, tables)

    async def tables_of(self, conn: Connection, inst: Instance) -> list[Table]:
        """The instance's tables, listed at most once per TABLES_TTL_S."""
        known = self._tables.get(inst.id)
        if known is None or time.monotonic() - known[0] > TABLES_TTL_S:
            known = self._tables[inst.id] = (time.monotonic(), await list_tables(conn, inst))
        return known[1]

    async def close(self) -> None:
        await self.pool.close()

    async def run(self, select_: list[str] | None = None, due_only: bool = False, now: datetime | None = None,
                  instances: list[str] | None = None) -> ChecksSummary:
        """Run the selected checks (all by default) once on every instance in their scope."""
        t0 = time.perf_counter()
        summary = ChecksSummary()
        async with self.store.raw() as conn:
            checks = await stored_checks(conn, select_)
            defined = dict(await conn.fetch("select id, updated_at from quality_checks")) if due_only else {}
        if not checks:
            return summary
        sem = asyncio.Semaphore(self.settings.worker.concurrency)

        async def one(inst: Instance) -> None:
            mine = [(cid, c) for cid, c in checks if c.applies(inst.name, inst.tags or {})]
            if mine:
                async with sem:
                    summary.outcomes += await self._instance(inst, mine, due_only, now, defined)

        await asyncio.gather(*(one(i) for i in await scoped_instances(self.store, None, self.shard, instances)))
        summary.wall_s = time.perf_counter() - t0
        return summary

    async def _instance(self, inst: Instance, checks: list[tuple[int, Any]], due_only: bool,
                        now: datetime | None, defined: dict[int, datetime]) -> list[CheckOutcome]:
        at = now or datetime.now(UTC)
        async with self.store.raw() as store:
            previous = {(r["check_id"], r["object"]): r for r in await store.fetch(
                "select check_id, object, ran_at, details from quality_check_results where instance_id = $1", inst.id)}
        if due_only:
            checks = [(cid, c) for cid, c in checks if _due(cid, c, inst.name, previous, defined.get(cid), at)]
        lanes = max(1, min(self.per_instance, len(checks)))
        done = await asyncio.gather(*(self._lane(inst, n, checks[n::lanes], previous, at) for n in range(lanes)
                                      if checks[n::lanes]))
        return [o for outcomes in done for o in outcomes]

    async def _lane(self, inst: Instance, n: int, checks: list[tuple[int, Any]], previous: dict,
                    at: datetime) -> list[CheckOutcome]:
        """Some of the instance's due checks, one after another on one session (the pool holds one
        session per name: a further lane's session has a name of its own)."""
        ref = InstanceRef(inst.id, inst.name, inst.engine, dict(inst.tags or {}))
        target = target_of(inst) if n == 0 else replace(target_of(inst), name=f"{inst.name} (session {n + 1})")
        outcomes: list[CheckOutcome] = []
        async with self.store.raw() as store:
            try:
                async with self.pool.session(target, password_for(inst, self.settings)) as conn:
                    tables = await self.tables_of(conn, inst)
                    for cid, check in checks:
                        outcomes += await self._check(store, conn, ref, inst, cid, check, tables, previous, at)
            except (ConnectFailed, OSError, ConnectionError, asyncpg.InterfaceError) as e:
                # Unreachable, or the session broke under a check (the pool reopens it next time):
                # every check not yet run here failed this time, and resolves nothing.
                error = str(e) or type(e).__name__
                ran = {o.check for o in outcomes}
                for cid, check in checks:
                    if check.name not in ran:
                        await record_failure(store, ref, collector_name(check.name), "error", error, at, 0.0)
                        outcomes.append(CheckOutcome(check.name, check.kind, inst.name, "", FAILED, None, error))
        return outcomes

    async def _check(self, store: asyncpg.Connection, conn: Connection, ref: InstanceRef, inst: Instance, cid: int,
                     check: Any, tables: list[Table], previous: dict, at: datetime) -> list[CheckOutcome]:
        family = family_of(inst.engine)
        targets: list[Table | None] = [t for t in tables if check.matches_table(t.schema, t.name)]
        if not check.tables:
            targets = [None]
        verdicts: list[tuple[str, Verdict]] = _gone_tables(cid, check, targets, previous)
        if not targets and not verdicts:
            return [CheckOutcome(check.name, check.kind, inst.name, "", NO_TABLES, None,
                                 f"no table on {inst.name} matches {', '.join(check.tables)}")]
        t0 = time.perf_counter()
        outcomes = [CheckOutcome(check.name, check.kind, inst.name, label, v.state, v.value, v.findings[0].title)
                    for label, v in verdicts]
        errors = []
        for table in targets:
            label = table.label if table else check.name
            prev = previous.get((cid, label))
            inputs = RunInputs(now=at, previous=prev["details"] if prev else None,
                               history=await _history(store, inst.id, check, label, at) if check.kind == "volume" else ())
            try:
                verdict = await asyncio.wait_for(quality_run.run_check(conn, family, check, table, inputs),
                                                 check.timeout_s)
            except TimeoutError:  # the check's own timeout_s (an OSError too: caught first); the query is cancelled
                errors.append(f"{label}: timed out after {check.timeout_s}s")
                outcomes.append(CheckOutcome(check.name, check.kind, inst.name, label, FAILED, None, errors[-1]))
                continue
            except (ConnectFailed, OSError, ConnectionError):
                raise
            except Exception as e:  # noqa: BLE001 - one broken check must not stop the others
                errors.append(f"{label}: {type(e).__name__}: {e}")
                outcomes.append(CheckOutcome(check.name, check.kind, inst.name, label, FAILED, None, errors[-1]))
                continue
            verdicts.append((label, verdict))
            outcomes.append(CheckOutcome(check.name, check.kind, inst.name, label, verdict.state, verdict.value,
                                         "; ".join(f.title for f in verdict.findings)))
        ms = (time.perf_counter() - t0) * 1000
        result = Result(findings=[f for _, v in verdicts for f in v.findings],
                        samples=[s for _, v in verdicts for s in v.samples])
        labelled = InstanceRef(ref.id, ref.name, ref.engine, {**ref.tags, **check.labels})
        # A table that could not be measured is not "fine": nothing is resolved on that run.
        run = RunRecord(collector_name(check.name), at, ms, result, resolves=not errors)
        async with store.transaction():
            await record_runs(store, labelled, [run])
            await store.executemany(
                "insert into quality_check_results (check_id, instance_id, object, ran_at, state, value, details) "
                "values ($1, $2, $3, $4, $5, $6, $7) on conflict (check_id, instance_id, object) do update set "
                "ran_at = excluded.ran_at, state = excluded.state, value = excluded.value, details = excluded.details",
                [(cid, inst.id, label, at, v.state, v.value, json.dumps(v.details, default=str)) for label, v in verdicts]
                + [(cid, inst.id, o.object, at, FAILED, None, json.dumps({"error": o.title}))
                   for o in outcomes if o.state == FAILED])
        if errors:
            log.warning("check %s on %s: %s", check.name, inst.name, "; ".join(errors))
        return outcomes


def _gone_tables(cid: int, check: Any, targets: list[Table | None], previous: dict) -> list[tuple[str, Verdict]]:
    """Schema checks: a table seen by an earlier run that no longer exists has drifted too."""
    if check.kind != "schema":
        return []
    present = {t.label for t in targets if t is not None}
    return [(label, table_gone(check, label, r["details"]["baseline"])) for (c, label), r in previous.items()
            if c == cid and label not in present and (r["details"] or {}).get("baseline")]


def _due(cid: int, check: Any, instance: str, previous: dict, defined_at: datetime | None, at: datetime) -> bool:
    """Due when it has not run on this instance since its current slot began (never run: since it
    was defined). The latest of its tables' runs counts: a check runs all its tables together."""
    last = max((r["ran_at"] for (c, _), r in previous.items() if c == cid), default=defined_at)
    period = check.every.seconds
    return is_due(at, last, period, phase_s(check.name, instance, period))


async def _history(store: asyncpg.Connection, instance_id: int, check: Any, label: str,
                   at: datetime) -> list[tuple[datetime, float]]:
    """The table's past rows-per-period samples for this check, over its baseline window."""
    from collectors.quality.verdicts import object_of

    rows = await store.fetch(
        "select ts, value from samples where instance_id = $1 and metric = 'quality_rows_per_period' "
        "and collector = $2 and object = $3 and ts >= $4 and ts < $5 order by ts",
        instance_id, collector_name(check.name), object_of(check.name, label),
        at - timedelta(days=check.baseline_days), at)
    return [(r["ts"], r["value"]) for r in rows]
