"""Sweep time and worker memory as the simulated fleet grows (repeated inventory entries).

    python bench/scale.py --inventory /tmp/dbf_bench_fleet-x10.yaml --steps 500,2000,5000

For each step: a fresh store with the first N instances of the repeated inventory (each database
listed up to R times, so N held-open sessions), one warm-up sweep of every PostgreSQL collector
(connections opened, baselines taken), then measured sweeps. Reported per step: median wall and
CPU, the process's peak RSS, the dbfleet backends' private memory on the servers (USS), and the
machine's available memory. A watchdog cancels a step if available memory falls below
--min-available-gb (PostgreSQL backends for thousands of sessions are the limit on this machine,
not the worker), and the step is reported as stopped, with the numbers at that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import psutil
from common import RssSampler, fresh_store, import_inventory, machine, now_utc, select_inventory, store_url, update_doc

from app.settings import Settings
from app.scheduler import tune_gc
from app.sweep import Selector, Sweeper

HEADING = "## Scale"
SELECTOR = Selector(tags=(("fleet", "bench"),))


def backend_uss_mb() -> tuple[int, float]:
    """(count, total private MB) of the servers' backends logged in as dbfleet."""
    n, total = 0, 0
    for p in psutil.process_iter(["username", "cmdline"]):
        try:
            if p.info["username"] == "postgres" and (p.info["cmdline"] or [""])[0].startswith("postgres: dbfleet "):
                total += p.memory_full_info().uss
                n += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return n, round(total / 2**20, 1)


async def guarded(coro, min_available: float) -> tuple[object | None, str | None]:
    """Run a sweep; cancel it if the machine runs short of memory."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        await asyncio.wait([task], timeout=0.5)
        avail = psutil.virtual_memory().available / 2**30
        if not task.done() and avail < min_available:
            task.cancel()
            return None, f"stopped: available memory {avail:.1f} GiB < {min_available} GiB"
    return task.result(), None


async def step(args: argparse.Namespace, n: int) -> dict:
    store = await fresh_store(store_url())
    await import_inventory(store, select_inventory(args.inventory, n))
    tune_gc()  # as the worker does
    sweeper = Sweeper(store, Settings())
    rss = RssSampler()
    out: dict = {"instances": n}
    try:
        t0 = time.perf_counter()
        warm, stopped = await guarded(sweeper.sweep(None, SELECTOR), args.min_available_gb)
        out["warmup_wall_s"] = round(time.perf_counter() - t0, 2)
        walls, cpus = [], []
        for _ in range(args.sweeps if not stopped else 0):
            summary, stopped = await guarded(sweeper.sweep(None, SELECTOR), args.min_available_gb)
            if stopped:
                break
            walls.append(summary.wall_s)
            cpus.append(summary.cpu_s)
            out["last"] = summary.as_json()
        out["backends"], out["backends_uss_mb"] = backend_uss_mb()
        out["available_gb"] = round(psutil.virtual_memory().available / 2**30, 1)
        out["stopped"] = stopped
        if walls:
            out.update(wall_s=round(statistics.median(walls), 2), cpu_s=round(statistics.median(cpus), 2))
    finally:
        await sweeper.close()
        await store.dispose()
        rss.close()
    out["peak_rss_mb"] = round(rss.peak / 2**20, 1)
    return out


def markdown(rows: list[dict], command: str) -> str:
    body = "\n".join(
        f"| {r['instances']} | {r.get('wall_s', '—')} | {r.get('cpu_s', '—')} | "
        f"{round(r['wall_s'] / r['instances'] * 1000, 2) if r.get('wall_s') else '—'} | {r['peak_rss_mb']} | "
        f"{r['backends']} / {r['backends_uss_mb']} | {r['available_gb']} | {r['stopped'] or 'ok'} |" for r in rows)
    return f"""### {now_utc()}

`{command}`

| instances | sweep wall s | sweep CPU s | ms per instance | worker peak RSS MB | dbfleet backends / their USS MB | available GiB after | |
|---|---:|---:|---:|---:|---:|---:|---|
{body}
"""


INTRO = """Produced by `bench/scale.py`: the simulated fleet lists each of the fleet's databases several
times, so N instances are N held-open sessions on the same servers. Machine: """


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inventory", type=Path, default=Path("/tmp/dbf_bench_fleet-x10.yaml"))
    p.add_argument("--steps", default="500,2000,5000")
    p.add_argument("--sweeps", type=int, default=1)
    p.add_argument("--min-available-gb", type=float, default=3.0)
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args()
    rows = []
    for n in (int(s) for s in args.steps.split(",")):
        rows.append(asyncio.run(step(args, n)))
        print(json.dumps(rows[-1]), flush=True)
        if rows[-1]["stopped"]:
            break
    if not args.no_doc:
        command = f"python bench/scale.py --inventory {args.inventory} --steps {args.steps} --sweeps {args.sweeps}"
        update_doc(HEADING, "scale.py", markdown(rows, command), INTRO + machine() + ".")


if __name__ == "__main__":
    main()
