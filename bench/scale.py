"""Sweep time and worker memory as the fleet grows, on the wire-protocol simulator (bench/pgsim).

    .venv/bin/python bench/scale.py --steps 500,1000,2000,5000 --sweeps 2

5,000 real PostgreSQL backends do not fit in this machine's memory, so every instance is a
database name on a simulated server (`python -m bench.pgsim.server --servers K`, started here in its
own process: one listener per simulated server, --databases-per-server of them each, 125 as in the
fleet) that answers the collectors' statements with rows recorded from a real server. Each
step runs in a fresh child process (so one step's memory high-water mark does not carry into the
next): a fresh store with N instances, two warm-up sweeps of every PostgreSQL collector (sessions
opened, baselines and catalog caches taken), then measured sweeps.

Reported per step: median sweep wall and CPU, statements per instance per sweep (counted at
PgConnection.fetch), the worker's RSS before any session was opened and after the sweeps with
all N sessions held, the difference per held instance (target <= 0.06 MB; also after glibc's malloc_trim, which hands
free lists back to the system, so that allocator slack is told apart from what is held), the garbage
collector's tracked objects per instance, and the simulator's CPU. A watchdog cancels a step if
the machine's available memory falls below --min-available-gb.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from common import (
    REPO,
    fresh_store,
    import_inventory,
    machine,
    now_utc,
    store_url,
    update_doc,
)

from app.scheduler import tune_gc
from app.settings import Settings
from app.sweep import Selector, Sweeper
from collectors.engines import pg

HEADING = "## Scale"
SELECTOR = Selector(tags=(("fleet", "bench"),))
TARGET_MB_PER_INSTANCE = 0.06
TARGET_RSS_MB_AT_5000 = 400


def start_simulator(servers: int) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.pgsim.server", "--servers", str(servers)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, [int(p) for p in line.rsplit(":", 1)[1].split(",")]


def inventory(ports: list[int], n: int, per_server: int) -> list[dict]:
    """N databases, per_server of them on each simulated server (the fleet has 125 per server)."""
    return [{"name": f"sim-{i:05d}", "engine": "postgres", "host": "127.0.0.1", "port": ports[i // per_server],
             "dbname": f"sim_{i:05d}", "user": "dbfleet", "tls_mode": "disable",
             "tags": {"fleet": "bench", "pgcluster": f"sim{i // per_server}"}} for i in range(n)]


class Statements:
    """Counts what the collectors send (PgConnection.fetch) while `on`."""

    def __init__(self) -> None:
        self.on, self.count = False, 0
        original, counter = pg.PgConnection.fetch, self

        async def fetch(conn: pg.PgConnection, sql: str, *args: Any) -> list[dict[str, Any]]:
            if counter.on:
                counter.count += 1
            return await original(conn, sql, *args)

        pg.PgConnection.fetch = fetch


async def guarded(coro, min_available: float) -> tuple[Any, str | None]:
    """Run a sweep; cancel it if the machine runs short of memory."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        await asyncio.wait([task], timeout=0.5)
        avail = psutil.virtual_memory().available / 2**30
        if not task.done() and avail < min_available:
            task.cancel()
            return None, f"stopped: available memory {avail:.1f} GiB < {min_available} GiB"
    return task.result(), None


def rss_mb(trim: bool = False) -> float:
    gc.collect()
    if trim:  # hand glibc's free lists back to the system: what stays is what the worker holds
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    return psutil.Process().memory_info().rss / 2**20


async def step(args: argparse.Namespace) -> dict:
    """One step, in this (child) process: N instances on the simulator at --port."""
    n = args.one_step
    store = await fresh_store(store_url())
    await import_inventory(store, inventory([int(p) for p in args.ports.split(",")], n, args.databases_per_server))
    tune_gc()  # as the worker does
    sweeper = Sweeper(store, Settings())
    if args.statement_cache is not None:
        sweeper.pool.limits = dataclasses.replace(sweeper.pool.limits, statement_cache_size=args.statement_cache)
    statements = Statements()
    out: dict[str, Any] = {"instances": n, "statement_cache_size": sweeper.pool.limits.statement_cache_size}
    objects_before, rss_before, trimmed_before = len(gc.get_objects()), rss_mb(), rss_mb(trim=True)
    try:
        t0 = time.perf_counter()
        stopped = None
        for _ in range(2):
            if stopped is None:
                _, stopped = await guarded(sweeper.sweep(None, SELECTOR), args.min_available_gb)
        out["warmup_wall_s"] = round(time.perf_counter() - t0, 2)
        walls, cpus, counts = [], [], []
        for _ in range(args.sweeps if stopped is None else 0):
            statements.on, statements.count = True, 0
            summary, stopped = await guarded(sweeper.sweep(None, SELECTOR), args.min_available_gb)
            statements.on = False
            if stopped:
                break
            walls.append(summary.wall_s)
            cpus.append(summary.cpu_s)
            counts.append(statements.count)
            out["last"] = {k: v for k, v in summary.as_json().items() if k != "errors"}
            out["errors"] = dict(list(summary.errors.items())[:3])
        out["held_sessions"] = len(sweeper.pool)
        rss_after = rss_mb()
        trimmed_after = rss_mb(trim=True)
        out.update(rss_before_mb=round(rss_before, 1), rss_after_mb=round(rss_after, 1),
                   mb_per_instance=round((rss_after - rss_before) / max(n, 1), 4),
                   trimmed_before_mb=round(trimmed_before, 1), trimmed_after_mb=round(trimmed_after, 1),
                   trimmed_mb_per_instance=round((trimmed_after - trimmed_before) / max(n, 1), 4),
                   gc_objects_per_instance=round((len(gc.get_objects()) - objects_before) / max(n, 1), 1),
                   available_gb=round(psutil.virtual_memory().available / 2**30, 1), stopped=stopped)
        if walls:
            out.update(wall_s=round(statistics.median(walls), 2), cpu_s=round(statistics.median(cpus), 2),
                       statements_per_instance=round(statistics.median(counts) / n, 2))
    finally:
        await sweeper.close()
        await store.dispose()
    return out


def run_step(args: argparse.Namespace, n: int, ports: list[int], sim: psutil.Process) -> dict:
    sim_cpu = sum(sim.cpu_times()[:2])
    cmd = [sys.executable, str(Path(__file__)), "--one-step", str(n), "--ports", ",".join(map(str, ports)),
           "--databases-per-server", str(args.databases_per_server), "--sweeps", str(args.sweeps),
           "--min-available-gb", str(args.min_available_gb)]
    if args.statement_cache is not None:
        cmd += ["--statement-cache", str(args.statement_cache)]
    done = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"step {n} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["simulator_cpu_s"] = round(sum(sim.cpu_times()[:2]) - sim_cpu, 2)
    return row


def _per_instance_slope(rows: list[dict]) -> str:
    """RSS growth per added instance between the smallest and the largest step (fixed costs cancel)."""
    ok = [r for r in rows if not r["stopped"]]
    if len(ok) < 2:
        return "—"
    a, b, d = ok[0], ok[-1], ok[-1]["instances"] - ok[0]["instances"]
    return (f"{(b['rss_after_mb'] - a['rss_after_mb']) / d:.4f} "
            f"({(b['trimmed_after_mb'] - a['trimmed_after_mb']) / d:.4f} after malloc_trim)")


def markdown(rows: list[dict], command: str) -> str:
    def cell(r: dict, key: str) -> Any:
        return r.get(key, "—")

    body = "\n".join(
        f"| {r['instances']} | {cell(r, 'wall_s')} | {cell(r, 'cpu_s')} | "
        f"{round(r['wall_s'] / r['instances'] * 1000, 2) if r.get('wall_s') else '—'} | "
        f"{cell(r, 'statements_per_instance')} | {r['rss_before_mb']} → {r['rss_after_mb']} | "
        f"{r['mb_per_instance']} | {r['trimmed_mb_per_instance']} | {r['gc_objects_per_instance']} | {r['held_sessions']} | "
        f"{r['simulator_cpu_s']} | {r['stopped'] or 'ok'} |" for r in rows)
    at_max = rows[-1]
    return f"""### {now_utc()}

`{command}`

Statement cache per session: {rows[0]['statement_cache_size']}. Targets: ≤ {TARGET_MB_PER_INSTANCE} MB per held
instance, ≤ {TARGET_RSS_MB_AT_5000} MB worker RSS at 5,000.

| instances | sweep wall s | sweep CPU s | ms per instance | statements per instance | worker RSS MB (before sessions → after) | MB per held instance | same after malloc_trim | GC objects per instance | sessions held | simulator CPU s | |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
{body}

RSS growth per added instance from the smallest to the largest step: {_per_instance_slope(rows)} MB.
At {at_max['instances']}: {at_max['rss_after_mb']} MB worker RSS, {at_max['mb_per_instance']} MB per held instance.
"""


INTRO = """Produced by `bench/scale.py` on the wire-protocol simulator (`bench/pgsim`, see its README): every
instance is a database name on a simulated server (125 per server, one listener each, all in one
simulator process) answering with rows recorded from a real
PostgreSQL 15, so N instances are N held-open asyncpg sessions without N server backends. Each step
runs in its own process. Machine: """


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", default="500,1000,2000,5000")
    p.add_argument("--sweeps", type=int, default=2)
    p.add_argument("--statement-cache", type=int, default=None,
                   help="asyncpg statement_cache_size per session (default: the adapter's)")
    p.add_argument("--min-available-gb", type=float, default=3.0)
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--one-step", type=int, help=argparse.SUPPRESS)
    p.add_argument("--databases-per-server", type=int, default=125,
                   help="databases per simulated server (the fleet's clusters hold 125)")
    p.add_argument("--ports", help=argparse.SUPPRESS)
    args = p.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 5,000 sessions + the store's pool
    if args.one_step:
        print(json.dumps(asyncio.run(step(args))), flush=True)
        return
    steps = [int(s) for s in args.steps.split(",")]
    proc, ports = start_simulator(-(-max(steps) // args.databases_per_server))
    rows = []
    try:
        sim = psutil.Process(proc.pid)
        for n in steps:
            rows.append(run_step(args, n, ports, sim))
            print(json.dumps(rows[-1]), flush=True)
            if rows[-1]["stopped"]:
                break
    finally:
        proc.terminate()
        proc.wait(10)
    if not args.no_doc:
        command = (f"python bench/scale.py --steps {args.steps} --sweeps {args.sweeps} "
                   f"--databases-per-server {args.databases_per_server}") + (
            f" --statement-cache {args.statement_cache}" if args.statement_cache is not None else "")
        update_doc(HEADING, "scale.py", markdown(rows, command), INTRO + machine() + ".")


if __name__ == "__main__":
    main()
