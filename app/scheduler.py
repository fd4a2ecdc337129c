"""The worker: APScheduler jobs (one per collector, each a sweep of this shard), store upkeep,
the alert dispatcher, and the worker's own /metrics."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import re
import socket

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import start_http_server

from app import telemetry
from app.alerting.dispatcher import run_dispatcher
from app.db import Store
from app.inventory.cloud_settings import CloudSettings
from app.inventory.discovery_aws import discovery_job
from app.inventory.discovery_azure import discovery_job_azure
from app.settings import Settings
from app.store_partitions import maintain_store_partitions
from app.sweep import Shard, Sweeper
from collectors.registry import all_specs

log = logging.getLogger(__name__)


def resolve_shard(settings: Settings, hostname: str | None = None) -> Shard:
    """i/N from settings, or with 'auto' the ordinal of a StatefulSet pod (name-<ordinal>)."""
    text = settings.shard or settings.worker.shard
    if text != "auto":
        return Shard.parse(text)
    count = settings.shard_count or settings.worker.shard_count
    if not count:
        raise ValueError("shard 'auto' needs the shard count (DBFLEET_SHARD_COUNT)")
    host = hostname or socket.gethostname()
    match = re.search(r"-(\d+)$", host)
    if not match:
        raise ValueError(f"shard 'auto': hostname {host!r} does not end in a StatefulSet ordinal")
    return Shard.parse(f"{match.group(1)}/{count}")


def collector_intervals(settings: Settings) -> dict[str, int]:
    """Each collector name's interval: config override or the spec's default (smallest across engines)."""
    out: dict[str, int] = {}
    for spec in all_specs():
        interval = settings.collector(spec.name).interval_s or spec.interval_s
        out[spec.name] = min(out.get(spec.name, interval), interval)
    return {k: v for k, v in out.items() if settings.collector(k).enabled}


def tune_gc() -> None:
    """A worker holds hundreds of thousands of long-lived objects (held connections, collector
    state); with CPython's default generation-0 threshold of 700 the collector re-walks them
    constantly (about 8 % of a 500-instance sweep's CPU). Freeze what exists and collect less often.
    """
    if gc.get_threshold()[0] < 50_000:
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_memory() -> bool:
    """Hand the C allocator's free pages back to the system. A sweep of thousands of instances
    allocates and frees a lot of small buffers (rows, JSON); glibc keeps the freed arenas, so the
    worker's RSS would stay at the sweep's peak instead of what it holds between sweeps (measured
    on bench/pgsim: about 0.09 MB per held instance as is, 0.055 after a trim). Returns whether
    memory was released."""
    return bool(_TRIM(0)) if _TRIM is not None else False


_SHORTEST_OVERRIDES = """
select o.key as collector, min((o.value->>'interval_s')::int) as interval_s
from instances i, jsonb_each(i.overrides) o
where i.enabled and i.gone_at is null and jsonb_typeof(o.value) = 'object' and o.value ? 'interval_s'
group by o.key
"""


async def job_intervals(store: Store, settings: Settings) -> dict[str, int]:
    """Each collector job's period: its configured interval, or shorter where an instance's own
    `overrides.<collector>.interval_s` asks for it (sweeps then skip the instances not yet due)."""
    out = collector_intervals(settings)
    async with store.raw() as conn:
        for r in await conn.fetch(_SHORTEST_OVERRIDES):
            if r["collector"] in out and r["interval_s"]:
                out[r["collector"]] = max(5, min(out[r["collector"]], r["interval_s"]))
    return out


async def reschedule(scheduler: AsyncIOScheduler, store: Store, settings: Settings, current: dict[str, int]) -> None:
    """Follow inventory changes to per-instance intervals without a restart."""
    for name, interval in (await job_intervals(store, settings)).items():
        if current.get(name) != interval and scheduler.get_job(f"collector:{name}") is not None:
            scheduler.reschedule_job(f"collector:{name}", trigger="interval", seconds=interval)
            current[name] = interval


async def upkeep(store: Store, settings: Settings) -> None:
    async with store.raw() as conn:
        changed = await maintain_store_partitions(conn, settings.store.premake_days, settings.store.retention_days)
        await conn.execute("delete from collector_runs where started_at < now() - make_interval(days => $1)",
                           settings.store.retention_days)
        await conn.execute("delete from outbox where processed_at < now() - interval '7 days'")
    if changed["created"] or changed["dropped"]:
        log.info("store partitions: %s", changed)


async def run_worker(store: Store, settings: Settings, stop: asyncio.Event, serve_metrics: bool = True) -> None:
    shard = resolve_shard(settings)
    tune_gc()
    sweeper = Sweeper(store, settings, shard)
    await upkeep(store, settings)
    if serve_metrics and settings.worker.metrics_port:
        start_http_server(settings.worker.metrics_port, registry=telemetry.REGISTRY)
    scheduler = AsyncIOScheduler(timezone="UTC")
    intervals = await job_intervals(store, settings)
    for name, interval in intervals.items():
        scheduler.add_job(sweeper.sweep, "interval", seconds=interval, args=[[name]], kwargs={"due_only": True},
                          id=f"collector:{name}", max_instances=1, coalesce=True, misfire_grace_time=interval,
                          next_run_time=_now())
    scheduler.add_job(reschedule, "interval", seconds=300, args=[scheduler, store, settings, intervals],
                      id="collector-intervals", max_instances=1)
    scheduler.add_job(upkeep, "interval", hours=1, args=[store, settings], id="store-upkeep", max_instances=1)
    scheduler.add_job(release_memory, "interval", seconds=60, id="release-memory", max_instances=1)
    scheduler.add_job(**sweep_requests_job(store, settings, sweeper, shard))
    scheduler.add_job(discover_databases_job, "interval", minutes=10, args=[store, settings, shard],
                      id="discover:databases", max_instances=1, coalesce=True, next_run_time=_now())
    for job in _extra_jobs(store, settings):
        scheduler.add_job(**job)
    # Data quality checks (issue 17): one job, each check at its own `every`.
    from app.quality.job import quality_checks_job

    scheduler.add_job(**quality_checks_job(store, settings, shard))
    scheduler.start()
    dispatcher = _start_dispatcher(store, settings, stop)
    log.info("worker shard %d/%d running %d collector jobs", shard.index, shard.count, len(scheduler.get_jobs()))
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        if dispatcher is not None:
            await asyncio.wait_for(asyncio.shield(dispatcher), 10)
        await sweeper.close()


def sweep_requests_job(store: Store, settings: Settings, sweeper: Sweeper, shard: Shard) -> dict:
    """Sweeps asked for through the API: this shard's share, claimed from the store every 2 s."""
    from app.sweep_requests import run_sweep_requests

    return dict(func=run_sweep_requests, trigger="interval", seconds=2, args=[store, sweeper, shard],
                kwargs={"concurrency": settings.worker.concurrency, "retention_days": settings.store.retention_days},
                id="sweep-requests", max_instances=1, coalesce=True, next_run_time=_now())


async def discover_databases_job(store: Store, settings: Settings, shard: Shard) -> None:
    """Database discovery on this shard's servers with patterns (app/inventory/databases.py)."""
    from app.inventory.databases import discover_all

    for r in await discover_all(store, settings, shard=shard):
        if r.added or r.returned or r.gone:
            log.info("databases on server %s: %d added, %d returned, %d gone", r.server, len(r.added),
                     len(r.returned), len(r.gone))


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _start_dispatcher(store: Store, settings: Settings, stop: asyncio.Event) -> asyncio.Task:
    return asyncio.create_task(run_dispatcher(store, settings, stop))


def _extra_jobs(store: Store, settings: Settings) -> list[dict]:
    """Cloud discovery jobs, for the clouds that have regions or subscriptions configured."""
    cfg = CloudSettings.of(settings)
    jobs = []
    for cloud, func, wanted, interval in (
            ("aws", discovery_job, cfg.aws.regions, cfg.aws.interval_s),
            ("azure", discovery_job_azure, cfg.azure.subscriptions, cfg.azure.interval_s)):
        if wanted:
            jobs.append(dict(func=func, trigger="interval", seconds=interval, args=[store, settings],
                             id=f"discover:{cloud}", max_instances=1, coalesce=True))
    return jobs
