"""Sweeps: run collectors over this worker's shard of the fleet on held-open connections.

The parts have a home each: which instances are ours (app/shard.py), what a run may know
(app/run_context.py), who a server is and whom it replicates from (app/topology.py), and what is
written (app/run_record.py). This module runs them: sessions, concurrency, timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import asyncpg
from sqlalchemy import select

from app import telemetry
from app.db import Store
from app.findings import InstanceRef, RunRecord
from app.inventory import aws_credentials  # also registers the aws-sm and aws-iam credential schemes
from app.inventory.cloud_settings import CloudSettings, targets_for_cloud
from app.inventory.targets import password_for, target_of
from app.inventory.store import filtered
from app.models import Instance
from app.run_context import RunInputs, extra_for, merged_thresholds
from app.run_record import CONNECTIVITY, Recorder, connectivity_of
from app.settings import Settings
from app.shard import Shard
from app.topology import Identities, Topology
from collectors.engines.base import ConnectFailed, SessionLimits, Target, Unreachable
from collectors.engines.pool import BackingOff, ConnectionPool
from collectors.registry import specs_for
from collectors.runner import run_collector
from collectors.spec import CollectorSpec, Context, Result, Scope

__all__ = ["CONNECTIVITY", "Selector", "Shard", "SweepSummary", "Sweeper"]
log = logging.getLogger(__name__)


class SessionLost(Exception):
    """The held session died under the sweep's identity read (the server restarting)."""


@dataclass(frozen=True)
class Selector:
    names: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    engine: str | None = None


@dataclass
class SweepSummary:
    collectors: list[str]
    instances: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    findings_open: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"collectors": self.collectors, "instances": self.instances, "ok": self.ok, "failed": self.failed,
                "skipped": self.skipped, "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "findings_open": self.findings_open}


@dataclass
class _Work:
    """One target of an instance (its SQL session, or a cloud API) and the specs to run on it."""

    target: Target
    password: Callable[[], Any] | None
    specs: list[CollectorSpec]
    sql: bool
    # Server-level collectors whose home is another entry of the same server: one empty run each
    # (once per process) resolves what they left here before the server had one home.
    elsewhere: list[str] = field(default_factory=list)


class Sweeper:
    """The collection side of one process: connections, identities, state, concurrency."""

    def __init__(self, store: Store, settings: Settings, shard: Shard = Shard()):
        w = settings.worker
        self.store = store
        self.settings = settings
        self.shard = shard
        self.pool = ConnectionPool(
            SessionLimits(connect_timeout_s=w.connect_timeout_s, statement_timeout_ms=w.statement_timeout_ms,
                          lock_timeout_ms=w.lock_timeout_ms),
            backoff_base_s=w.backoff_base_s, backoff_max_s=w.backoff_max_s)
        self.concurrency = w.concurrency
        self.recorder = Recorder()
        self.identities = Identities(w.identity_ttl_s)
        self.topology = Topology()
        self._sql_ok: dict[int, bool] = {}
        # When each (instance, collector) last started here: per-instance intervals (overrides).
        self._started: dict[tuple[int, str], float] = {}
        self._elsewhere_done: set[tuple[int, str]] = set()
        aws = CloudSettings.of(settings).aws
        aws_credentials.configure(endpoint_url=aws.endpoint_url, ttl_s=aws.secret_ttl_s)

    async def close(self) -> None:
        await self.pool.close()

    async def instances(self, selector: Selector = Selector()) -> list[Instance]:
        stmt = filtered(select(Instance), engine=selector.engine, tags=dict(selector.tags), enabled=True)
        stmt = stmt.where(Instance.gone_at.is_(None)).order_by(Instance.id)
        if selector.names:
            stmt = stmt.where(Instance.name.in_(selector.names))
        async with self.store.sessions() as session:
            rows = list((await session.execute(stmt)).scalars())
        return [i for i in rows if self.shard.owns(i.id)]

    async def sweep(self, collectors: list[str] | None = None, selector: Selector = Selector(),
                    progress: Callable[[str, str], None] | None = None, due_only: bool = False) -> SweepSummary:
        """Run the named collectors (all if None) once over the selected instances of this shard.

        `due_only` (the worker's scheduled sweeps) skips an instance whose own interval for a
        collector (its `overrides`) has not passed since that collector last started on it.
        """
        wall, cpu = time.perf_counter(), time.process_time()
        summary = SweepSummary(collectors=collectors or ["all"])
        insts = await self.instances(selector)
        summary.instances = len(insts)
        async with self.store.raw() as conn:
            self.topology = await Topology.load(conn)
            await self.recorder.load_unreachable(conn)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(inst: Instance) -> None:
            async with sem:
                status = await self._collect_instance(inst, collectors, summary, due_only)
            if progress:
                progress(inst.name, status)

        await asyncio.gather(*(one(i) for i in insts))
        summary.wall_s = time.perf_counter() - wall
        summary.cpu_s = time.process_time() - cpu
        async with self.store.raw() as conn:
            summary.findings_open = await conn.fetchval("select count(*) from findings where state <> 'resolved'")
        for name in collectors or ["all"]:
            telemetry.SWEEP_DURATION.labels(name).observe(summary.wall_s)
        return summary

    def thresholds(self, spec: CollectorSpec, inst: Instance) -> dict[str, Any]:
        return merged_thresholds(self.settings, spec, inst)

    def _specs(self, engine: str, inst: Instance, collectors: list[str] | None, due_only: bool,
               elsewhere: list[str] | None = None) -> list[CollectorSpec]:
        out = []
        now = time.monotonic()
        home = self.topology.is_home(inst.id)
        for spec in specs_for(engine):
            override = (inst.overrides or {}).get(spec.name) or {}
            if collectors is not None and spec.name not in collectors:
                continue
            if not self.settings.collector(spec.name).enabled or override.get("enabled") is False:
                continue
            if due_only and (last := self._started.get((inst.id, spec.name))) is not None:
                interval = override.get("interval_s") or self.settings.collector(spec.name).interval_s or spec.interval_s
                if now - last < 0.9 * interval:  # a little slack: job ticks are not exact
                    continue
            if spec.scope is Scope.server and not home:
                if elsewhere is not None and (inst.id, spec.name) not in self._elsewhere_done:
                    elsewhere.append(spec.name)
                continue
            out.append(spec)
        return out

    async def _collect_instance(self, inst: Instance, collectors: list[str] | None, summary: SweepSummary,
                                due_only: bool) -> str:
        """The instance's SQL collectors on its held session, then its cloud collectors (CloudWatch,
        Azure Monitor) on the cloud targets its identity gives it."""
        ref = InstanceRef(inst.id, inst.name, inst.engine, dict(inst.tags or {}))
        elsewhere: list[str] = []
        work = [_Work(target_of(inst), password_for(inst, self.settings),
                      self._specs(inst.engine, inst, collectors, due_only, elsewhere), sql=True, elsewhere=elsewhere)]
        if inst.cloud:
            for cloud_target in await targets_for_cloud(inst.name, inst.cloud, self.settings):
                work.append(_Work(cloud_target, None, self._specs(cloud_target.engine, inst, collectors, due_only),
                                  sql=False))
        names = [s.name for w in work for s in w.specs]
        async with self.store.raw() as store:
            locked = await self.recorder.claim(store, ref, names)
            status = "ok"
            for w in work:
                mine = [s for s in w.specs if s.name in locked]
                summary.skipped += len(w.specs) - len(mine)
                outcome = await self._run_specs(store, w, ref, inst, mine, summary)
                if w.sql:
                    status = outcome
                    self._sql_ok[inst.id] = outcome in ("ok", "failed")
            return status

    async def _run_specs(self, store: asyncpg.Connection, work: _Work, ref: InstanceRef, inst: Instance,
                         specs: list[CollectorSpec], summary: SweepSummary) -> str:
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        connectivity = connectivity_of(work.target.engine, inst.engine)
        runs: list[RunRecord] = []  # written together, one statement for the instance's runs
        try:
            async with self.pool.session(work.target, work.password) as conn:
                if work.sql:
                    await self._identify(store, inst.id, work.target, conn)
                await self.recorder.connected(store, ref, connectivity, started, (time.perf_counter() - t0) * 1000)
                failures = 0
                for spec in specs:
                    failures += not await self._run_one(store, conn, spec, ref, inst, summary, runs)
                runs += [RunRecord(name, started, 0.0, Result()) for name in work.elsewhere]
        except SessionLost as e:
            # The server went away under the identity read (a restart): these runs failed, resolving nothing.
            for spec in specs:
                self._failed(ref, spec, "error", str(e), started, t0, summary, runs)
            await self.recorder.write_runs(store, ref, runs)
            return "failed"
        except ConnectFailed as e:
            await self.recorder.write_runs(store, ref, runs)
            await self._unreachable(store, work, ref, inst, connectivity, e, specs, started, t0, summary)
            return "skipped" if isinstance(e, BackingOff) else "unreachable"
        await self.recorder.write_runs(store, ref, runs)
        self._elsewhere_done.update((inst.id, name) for name in work.elsewhere)
        return "ok" if failures == 0 else "failed"

    async def _identify(self, store: asyncpg.Connection, instance_id: int, target: Target, conn) -> None:
        """The identity read is the held session's liveness check, bounded like a connect: a server
        that accepts and never answers becomes unreachable this sweep (and its session is dropped)."""
        limit = self.pool.limits.connect_timeout_s
        try:
            await self.identities.refresh(store, instance_id, conn, answer_timeout_s=limit)
        except TimeoutError:
            raise Unreachable(target, f"no answer on its session within {limit:g}s") from None
        except Exception as e:
            if not (callable(closed := getattr(conn, "is_closed", None)) and closed()):
                raise  # not the session (the store write that follows the read)
            raise SessionLost(f"session lost: {type(e).__name__}: {e}") from None

    async def _unreachable(self, store: asyncpg.Connection, work: _Work, ref: InstanceRef, inst: Instance,
                           connectivity: str, e: ConnectFailed, specs: list[CollectorSpec], started: datetime,
                           t0: float, summary: SweepSummary) -> None:
        if isinstance(e, BackingOff):
            summary.skipped += len(specs)
        else:
            summary.failed += len(specs) or 1
            summary.errors[ref.name] = str(e)
            if work.sql:
                await self.identities.unreachable(store, inst.id)
            if e.check == "login_failed" and inst.credential:
                aws_credentials.invalidate(inst.credential)  # a rotated secret is fetched again next time
        await self.recorder.unreachable(store, ref, connectivity, e, specs, started, (time.perf_counter() - t0) * 1000)

    async def _run_one(self, store: asyncpg.Connection, conn, spec: CollectorSpec, ref: InstanceRef,
                       inst: Instance, summary: SweepSummary, runs: list[RunRecord]) -> bool:
        if not spec.applies_to(conn.is_standby):
            return True
        self._started[(ref.id, spec.name)] = time.monotonic()
        thresholds = self.thresholds(spec, inst)
        extra = await extra_for(RunInputs(self.settings, self.topology, store, inst, spec,
                                          self._sql_ok.get(ref.id, False), thresholds))
        previous = self.recorder.states.previous(ref.id, spec.name)
        ctx = Context(instance=ref.name, engine=ref.engine, thresholds=thresholds, tags=ref.tags,
                      previous=previous, extra=extra)
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        try:
            result = await run_collector(spec, conn, ctx)
        except (asyncio.TimeoutError, TimeoutError) as e:
            return self._failed(ref, spec, "timeout", f"timed out after {spec.timeout_s}s {e}".strip(),
                                started, t0, summary, runs)
        except Exception as e:  # noqa: BLE001 - one broken collector must not stop the sweep
            return self._failed(ref, spec, "error", f"{type(e).__name__}: {e}", started, t0, summary, runs)
        ms = (time.perf_counter() - t0) * 1000
        # A collector that keeps a baseline and had none cannot tell "gone" from "not measured yet".
        runs.append(RunRecord(spec.name, started, ms, result,
                              resolves=not (result.state is not None and previous is None)))
        summary.ok += 1
        telemetry.RUNS.labels(spec.name, "ok").inc()
        telemetry.RUN_DURATION.labels(spec.name).observe(ms / 1000)
        return True

    def _failed(self, ref: InstanceRef, spec: CollectorSpec, status: str, error: str, started: datetime, t0: float,
                summary: SweepSummary, runs: list[RunRecord]) -> bool:
        ms = (time.perf_counter() - t0) * 1000
        log.warning("collector %s on %s: %s", spec.name, ref.name, error)
        runs.append(RunRecord(spec.name, started, ms, None, status, error))
        summary.failed += 1
        summary.errors[ref.name] = error
        telemetry.RUNS.labels(spec.name, status).inc()
        telemetry.RUN_DURATION.labels(spec.name).observe(ms / 1000)
        return False
