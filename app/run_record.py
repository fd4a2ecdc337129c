"""The record side of a sweep: claim an instance's collectors, write its runs with their state,
and keep the connectivity findings (unreachable, login failed, no credential) in step.

One store connection per instance being collected: it holds the (instance, collector) advisory
locks from the claim until the runs are written; asyncpg's reset on release unlocks them.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import asyncpg

from app import telemetry
from app.collector_state import CLAIM, CollectorStates
from app.findings import InstanceRef, RunRecord, record_failure, record_run, record_runs
from app.last_seen import LastSeenCache
from collectors.engines.base import ConnectFailed
from collectors.engines.pool import BackingOff
from collectors.spec import CollectorSpec, Finding, Result, Severity

CONNECTIVITY = "connectivity"


def lock_key(collector: str) -> int:
    return zlib.crc32(collector.encode()) & 0x7FFFFFFF


class Recorder:
    """What one process remembers about what it wrote, so the next write can be smaller."""

    def __init__(self) -> None:
        self.states = CollectorStates()
        self.last_seen = LastSeenCache()
        # (instance id, connectivity collector) pairs with an open unreachable finding.
        self._unreachable: set[tuple[int, str]] = set()

    async def load_unreachable(self, store: asyncpg.Connection) -> None:
        """Reloaded every sweep: another process (a terminal sweep, another worker) may have opened one."""
        self._unreachable = {(r[0], r[1]) for r in await store.fetch(
            "select distinct instance_id, collector from findings "
            "where (collector = $1 or collector like $1 || '@%') and state <> 'resolved'", CONNECTIVITY)}

    async def claim(self, store: asyncpg.Connection, ref: InstanceRef, names: list[str]) -> set[str]:
        """Lock the (instance, collector) pairs, record the ones another process holds, and bring
        this process's copy of their state up to the store's."""
        if not names:
            return set()
        got = {r["collector"]: r["seq"] for r in await store.fetch(CLAIM, ref.id, names, [lock_key(n) for n in names])}
        started = datetime.now(UTC)
        for name in names:
            if name not in got:  # e.g. a shard handover, or a terminal sweep of the same instance
                telemetry.RUNS.labels(name, "skipped").inc()
                await record_failure(store, ref, name, "skipped", "another worker is running it on this instance",
                                     started, 0.0)
        if stale := self.states.stale(ref.id, got):
            await self.states.load(store, ref.id, stale)
        return set(got)

    async def write_runs(self, store: asyncpg.Connection, ref: InstanceRef, runs: list[RunRecord]) -> None:
        if not runs:
            return
        for r in runs:
            if r.result is None:
                continue
            r.known = self.last_seen.get(ref.id, r.collector)
            if r.result.state is not None:
                r.state = self.states.change(ref.id, r.collector, r.result.state)
        await record_runs(store, ref, runs)
        for r in runs:
            if r.result is not None:
                if r.result.state is not None:
                    self.states.written(ref.id, r.state, r.collector, r.result.state)
                self.last_seen.put(ref.id, r.collector, r.started_at, r.seen)

    async def connected(self, store: asyncpg.Connection, ref: InstanceRef, connectivity: str, started: datetime,
                        ms: float) -> None:
        if connectivity == CONNECTIVITY:
            telemetry.INSTANCE_UP.labels(ref.name, ref.engine).set(1)
        if (ref.id, connectivity) in self._unreachable:
            self._unreachable.discard((ref.id, connectivity))
            await record_run(store, ref, connectivity, Result(), started, ms)

    async def unreachable(self, store: asyncpg.Connection, ref: InstanceRef, connectivity: str, e: ConnectFailed,
                          specs: list[CollectorSpec], started: datetime, ms: float) -> None:
        """A connection that failed: its finding, and a failed run for every collector it stopped."""
        if connectivity == CONNECTIVITY:
            telemetry.INSTANCE_UP.labels(ref.name, ref.engine).set(0)
        if isinstance(e, BackingOff):
            for spec in specs:
                telemetry.RUNS.labels(spec.name, "skipped").inc()
                await record_failure(store, ref, spec.name, "skipped", str(e), started, ms)
            return
        self._unreachable.add((ref.id, connectivity))
        await record_run(store, ref, connectivity, Result(findings=[_unreachable_finding(ref, connectivity, e)]),
                         started, ms)
        for spec in specs:
            telemetry.RUNS.labels(spec.name, "error").inc()
            await record_failure(store, ref, spec.name, "error", str(e), started, ms)


def connectivity_of(target_engine: str, instance_engine: str) -> str:
    """Connection findings are kept per target: the SQL session, and each cloud API apart."""
    return CONNECTIVITY if target_engine == instance_engine else f"{CONNECTIVITY}@{target_engine}"


def _unreachable_finding(ref: InstanceRef, connectivity: str, e: ConnectFailed) -> Finding:
    return Finding(
        check=e.check, object="server" if connectivity == CONNECTIVITY else connectivity.split("@", 1)[1],
        severity=Severity.critical,
        title=f"Cannot reach {ref.name}: {e}" if e.check != "credential_unavailable" else f"No credential for {ref.name}: {e}",
        details={"error": str(e)},
        recommendation="Check that the server is up, that its host/port in the inventory are right, and that "
                       "dbfleet's network path and credential are valid. dbfleet retries with exponential backoff.")
