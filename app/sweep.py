"""Sweeps: run collectors over this worker's shard of the fleet on held-open connections.

One store connection per instance being collected: it holds the advisory locks that keep two
workers from running the same collector on the same instance during a shard handover, and it
writes each run's results in one transaction.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import asyncpg
from sqlalchemy import select

from app import telemetry
from app.collector_state import CLAIM, CollectorStates
from app.db import Store
from app.findings import InstanceRef, RunRecord, record_failure, record_run, record_runs
from app.inventory import aws_credentials  # also registers the aws-sm and aws-iam credential schemes
from app.inventory.cloud_settings import CloudSettings
from app.inventory.cloud_settings import targets_for_cloud as _targets_for_cloud
from app.inventory.credentials import resolve_credential
from app.inventory.store import filtered
from app.models import Instance
from app.partitions import policies_for
from app.settings import Settings
from collectors.engines.base import ConnectFailed, SessionLimits, Target
from collectors.engines.pool import BackingOff, ConnectionPool
from collectors.registry import CLOUD_FAMILIES, specs_for
from collectors.runner import run_collector
from collectors.spec import CollectorSpec, Context, Finding, Result, Severity

log = logging.getLogger(__name__)
CONNECTIVITY = "connectivity"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            i, n = (int(p) for p in text.split("/"))
        except ValueError:
            raise ValueError(f"shard {text!r} must be i/N, e.g. 0/3") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard {text!r}: need 0 <= i < N")
        return cls(i, n)

    def owns(self, instance_id: int) -> bool:
        # Like Prometheus hashmod: md5 of the id, low 8 bytes as an unsigned integer, modulo N.
        digest = hashlib.md5(str(instance_id).encode()).digest()
        return int.from_bytes(digest[8:], "big") % self.count == self.index


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


def tune_gc() -> None:
    """A worker holds hundreds of thousands of long-lived objects (held connections, collector
    state); with CPython's default generation-0 threshold of 700 the collector re-walks them
    constantly (about 8 % of a 500-instance sweep's CPU). Freeze what exists and collect less often.
    """
    if gc.get_threshold()[0] < 50_000:
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)


class Sweeper:
    """The collection side of one worker process: connections, per-run state, concurrency."""

    def __init__(self, store: Store, settings: Settings, shard: Shard = Shard()):
        tune_gc()
        w = settings.worker
        self.store = store
        self.settings = settings
        self.shard = shard
        self.pool = ConnectionPool(
            SessionLimits(connect_timeout_s=w.connect_timeout_s, statement_timeout_ms=w.statement_timeout_ms,
                          lock_timeout_ms=w.lock_timeout_ms),
            backoff_base_s=w.backoff_base_s, backoff_max_s=w.backoff_max_s)
        self.concurrency = w.concurrency
        self.states = CollectorStates()
        # What this worker last wrote per (instance, collector): (run start, fingerprint -> finding).
        # Findings unchanged since then only get their last_seen bumped (see app/findings.py).
        self._written: dict[tuple[int, str], tuple[datetime, dict[str, Finding]]] = {}
        # (instance id, connectivity collector) pairs with an open unreachable finding
        self._unreachable_ids: set[tuple[int, str]] | None = None
        self._clusters: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self._sql_ok: dict[int, bool] = {}
        self._credentials: dict[int, str | None] = {}
        if aws_credentials is not None:
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
                    progress: Callable[[str, str], None] | None = None) -> SweepSummary:
        """Run the named collectors (all if None) once over the selected instances of this shard."""
        wall, cpu = time.perf_counter(), time.process_time()
        summary = SweepSummary(collectors=collectors or ["all"])
        insts = await self.instances(selector)
        summary.instances = len(insts)
        await self._load_clusters()
        # Reloaded every sweep: another process (the API, `dbfleet sweep`) may have opened one.
        async with self.store.raw() as conn:
            self._unreachable_ids = {(r[0], r[1]) for r in await conn.fetch(
                "select distinct instance_id, collector from findings "
                "where (collector = $1 or collector like $1 || '@%') and state <> 'resolved'", CONNECTIVITY)}
        sem = asyncio.Semaphore(self.concurrency)

        async def one(inst: Instance) -> None:
            async with sem:
                status = await self._collect_instance(inst, collectors, summary)
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

    async def _load_clusters(self) -> None:
        """Cluster membership from the `cluster` tag, across all shards (peers may live elsewhere)."""
        async with self.store.raw() as conn:
            rows = await conn.fetch("select name, tags from instances where tags ? 'cluster' and gone_at is null")
        clusters: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for r in rows:
            tags = json.loads(r["tags"]) if isinstance(r["tags"], str) else dict(r["tags"])
            clusters.setdefault(tags["cluster"], []).append((r["name"], tags))
        self._clusters = clusters

    def cluster_context(self, inst: Instance) -> dict[str, Any]:
        """What collectors may know about the instance's cluster peers (tags cluster= and role=)."""
        cluster = (inst.tags or {}).get("cluster")
        if not cluster:
            return {}
        peers = [(n, t) for n, t in self._clusters.get(cluster, []) if n != inst.name]
        standbys = [t.get("replication_name", n) for n, t in peers if t.get("role") in ("standby", "replica", "reader")]
        return {"cluster": cluster, "cluster_peers": [n for n, _ in peers], "expected_standbys": standbys}

    def _specs(self, engine: str, inst: Instance, collectors: list[str] | None) -> list[CollectorSpec]:
        out = []
        for spec in specs_for(engine):
            override = (inst.overrides or {}).get(spec.name, {})
            if collectors is not None and spec.name not in collectors:
                continue
            if not self.settings.collector(spec.name).enabled or override.get("enabled") is False:
                continue
            out.append(spec)
        return out

    def thresholds(self, spec: CollectorSpec, inst: Instance) -> dict[str, Any]:
        """Spec defaults < config < config by tag < the instance's own override."""
        cfg = self.settings.collector(spec.name)
        merged = {**spec.thresholds, **cfg.thresholds}
        for selector, values in cfg.by_tag.items():
            key, _, value = selector.partition("=")
            if (inst.tags or {}).get(key) == value:
                merged.update(values)
        merged.update(((inst.overrides or {}).get(spec.name) or {}).get("thresholds", {}))
        if "partition_policies" in spec.thresholds and not merged.get("partition_policies"):
            merged["partition_policies"] = policies_for(self.settings, inst)
        return merged

    async def _collect_instance(self, inst: Instance, collectors: list[str] | None, summary: SweepSummary) -> str:
        """The instance's SQL collectors on its held session, then its cloud collectors (CloudWatch,
        Azure Monitor) on the cloud targets its identity gives it."""
        ref = InstanceRef(inst.id, inst.name, inst.engine, dict(inst.tags or {}))
        target = Target(name=inst.name, engine=inst.engine, host=inst.host, port=inst.port, dbname=inst.dbname,
                        user=inst.user, tls_mode=inst.tls_mode, options=dict(inst.cloud or {}))
        instance_info = {"name": inst.name, "engine": inst.engine, "host": inst.host, "port": inst.port,
                         "user": inst.user, "cloud": inst.cloud}

        async def password() -> str | None:
            return await resolve_credential(inst.credential, instance_info)

        self._credentials[inst.id] = inst.credential
        work = [(target, password, self._specs(inst.engine, inst, collectors))]
        for cloud_target in await self._cloud_targets(inst):
            work.append((cloud_target, None, self._specs(cloud_target.engine, inst, collectors)))
        names = [s.name for _, _, specs in work for s in specs]
        async with self.store.raw() as store:
            locked = await _try_locks(store, inst.id, names)
            await self._record_lock_losers(store, ref, [n for n in names if n not in locked])
            if stale := self.states.stale(inst.id, locked):
                await self.states.load(store, inst.id, stale)
            # The locks go when the connection returns to the pool: asyncpg's reset on release
            # runs pg_advisory_unlock_all(), so no extra round trip here.
            status = "ok"
            for tgt, secret, specs in work:
                mine = [s for s in specs if s.name in locked]
                outcome = await self._run_specs(store, tgt, secret, ref, inst, mine, summary,
                                                skipped=len(specs) - len(mine))
                if tgt is target:
                    status = outcome
                    self._sql_ok[inst.id] = outcome in ("ok", "failed")
            return status

    async def _cloud_targets(self, inst: Instance) -> list[Target]:
        if not inst.cloud or _targets_for_cloud is None:
            return []
        return await _targets_for_cloud(inst.name, inst.cloud, self.settings)

    async def _record_lock_losers(self, store: asyncpg.Connection, ref: InstanceRef, names: list[str]) -> None:
        """Another worker holds these (instance, collector) locks, e.g. during a shard handover."""
        started = datetime.now(timezone.utc)
        for name in names:
            telemetry.RUNS.labels(name, "skipped").inc()
            await record_failure(store, ref, name, "skipped", "another worker is running it on this instance",
                                 started, 0.0)

    async def _run_specs(self, store: asyncpg.Connection, target: Target, password, ref: InstanceRef, inst: Instance,
                         specs: list[CollectorSpec], summary: SweepSummary, skipped: int) -> str:
        summary.skipped += skipped
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        runs: list[RunRecord] = []  # written together, one statement for the instance's runs
        try:
            async with self.pool.session(target, password) as conn:
                await self._connected(store, ref, _connectivity(target, inst), started, t0)
                failures = 0
                for spec in specs:
                    failures += not await self._run_one(store, conn, spec, ref, inst, summary, runs)
        except ConnectFailed as e:
            await self._write_runs(store, ref, runs)
            await self._record_unreachable(store, ref, _connectivity(target, inst), e, specs, started, t0, summary)
            return "skipped" if isinstance(e, BackingOff) else "unreachable"
        await self._write_runs(store, ref, runs)
        return "ok" if failures == 0 else "failed"

    async def _write_runs(self, store: asyncpg.Connection, ref: InstanceRef, runs: list[RunRecord]) -> None:
        if not runs:
            return
        for r in runs:
            r.known = self._written.get((ref.id, r.collector)) if r.result is not None else None
            if r.result is not None and r.result.state is not None:
                r.state = self.states.change(ref.id, r.collector, r.result.state)
        await record_runs(store, ref, runs)
        for r in runs:
            if r.result is not None:
                if r.result.state is not None:
                    self.states.written(ref.id, r.state, r.collector, r.result.state)
                self._written[(ref.id, r.collector)] = (r.started_at, r.seen)

    async def _connected(self, store: asyncpg.Connection, ref: InstanceRef, connectivity: str, started: datetime,
                         t0: float) -> None:
        if connectivity == CONNECTIVITY:
            telemetry.INSTANCE_UP.labels(ref.name, ref.engine).set(1)
        if (ref.id, connectivity) in self._unreachable_ids:
            self._unreachable_ids.discard((ref.id, connectivity))
            await record_run(store, ref, connectivity, Result(), started, (time.perf_counter() - t0) * 1000)

    async def _record_unreachable(self, store: asyncpg.Connection, ref: InstanceRef, connectivity: str,
                                  e: ConnectFailed, specs: list[CollectorSpec], started: datetime, t0: float,
                                  summary: SweepSummary) -> None:
        ms = (time.perf_counter() - t0) * 1000
        if connectivity == CONNECTIVITY:
            telemetry.INSTANCE_UP.labels(ref.name, ref.engine).set(0)
        if isinstance(e, BackingOff):
            summary.skipped += len(specs)
            for spec in specs:
                telemetry.RUNS.labels(spec.name, "skipped").inc()
                await record_failure(store, ref, spec.name, "skipped", str(e), started, ms)
            return
        summary.failed += len(specs) or 1
        summary.errors[ref.name] = str(e)
        if e.check == "login_failed" and aws_credentials is not None and (inst_credential := self._credentials.get(ref.id)):
            aws_credentials.invalidate(inst_credential)  # a rotated secret is fetched again next time
        self._unreachable_ids.add((ref.id, connectivity))
        finding = Finding(
            check=e.check, object="server" if connectivity == CONNECTIVITY else connectivity.split("@", 1)[1], severity=Severity.critical,
            title=f"Cannot reach {ref.name}: {e}" if e.check != "credential_unavailable" else f"No credential for {ref.name}: {e}",
            details={"error": str(e)},
            recommendation="Check that the server is up, that its host/port in the inventory are right, and that "
                           "dbfleet's network path and credential are valid. dbfleet retries with exponential backoff.")
        await record_run(store, ref, connectivity, Result(findings=[finding]), started, ms)
        for spec in specs:
            telemetry.RUNS.labels(spec.name, "error").inc()
            await record_failure(store, ref, spec.name, "error", str(e), started, ms)

    async def _run_one(self, store: asyncpg.Connection, conn, spec: CollectorSpec, ref: InstanceRef,
                       inst: Instance, summary: SweepSummary, runs: list[RunRecord]) -> bool:
        if not spec.applies_to(conn.is_standby):
            return True
        key = (ref.id, spec.name)
        extra = self.cluster_context(inst)
        if spec.engine in CLOUD_FAMILIES:
            # Cloud replica-lag findings only stand in when SQL access is not available.
            extra["sql_available"] = self._sql_ok.get(ref.id, False)
        if spec.peer_metrics and extra.get("cluster_peers"):
            extra.update(await _peer_metrics(store, spec, extra["cluster_peers"]))
        previous = self.states.previous(*key)
        ctx = Context(instance=ref.name, engine=ref.engine, thresholds=self.thresholds(spec, inst),
                      tags=ref.tags, previous=previous, extra=extra)
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


_PEER_METRIC = """
select object, sum(value) as value, array_agg(peer) as peers from (
  select distinct on (s.instance_id, s.object) i.name as peer, s.object, s.value
  from samples s join instances i on i.id = s.instance_id
  where i.name = any($1::text[]) and s.metric = $2 and s.ts > now() - make_interval(secs => $3)
  order by s.instance_id, s.object, s.ts desc) latest
group by object
"""


async def _peer_metrics(store: asyncpg.Connection, spec: CollectorSpec, peers: list[str]) -> dict[str, Any]:
    """Latest values of the spec's peer metrics, summed per object over the cluster peers, and
    which peers had any sample in the window (`peer_<metric>_reporting`): a peer with none is
    unknown, not zero."""
    window_s = 3 * spec.interval_s
    out: dict[str, Any] = {}
    for metric in spec.peer_metrics:
        rows = await store.fetch(_PEER_METRIC, peers, metric, window_s)
        out[f"peer_{metric}"] = {r["object"]: r["value"] for r in rows}
        out[f"peer_{metric}_reporting"] = sorted({p for r in rows for p in r["peers"]})
    return out


def _connectivity(target: Target, inst: Instance) -> str:
    """Connection findings are kept per target: the SQL session, and each cloud API apart."""
    return CONNECTIVITY if target.engine == inst.engine else f"{CONNECTIVITY}@{target.engine}"


def _lock_key(collector: str) -> int:
    return zlib.crc32(collector.encode()) & 0x7FFFFFFF


async def _try_locks(store: asyncpg.Connection, instance_id: int, names: list[str]) -> dict[str, int]:
    """Session advisory locks per (instance, collector): the ones we got, with their stored state's seq."""
    if not names:
        return {}
    got = await store.fetch(CLAIM, instance_id, names, [_lock_key(n) for n in names])
    return {r["collector"]: r["seq"] for r in got}
