"""dbfleet's steady-state sweep against the driver floor, in one process.

    python bench/sweep.py --inventory /tmp/dbf_bench_fleet.yaml --instances 500 --sweeps 5

1. Import the first N instances of the fleet's inventory into a fresh store (dbf_bench_store).
2. Warm-up: two dbfleet sweeps of every PostgreSQL collector (connections opened, counter
   baselines taken). During the second, every statement each instance's collectors send through
   PgConnection.fetch is recorded as (sql, args).
3. Then, alternating, several rounds of
   (a) the floor: bare asyncpg replaying each instance's recorded statements over the very same
       held-open asyncpg connections, at the same concurrency, discarding the results;
   (b) dbfleet: Sweeper.sweep() of all collectors, results stored (findings upserts, outbox,
       COPY of samples and query statistics, collector_runs).
4. Median wall and CPU (process time) of each, peak RSS of the process during each, the ratios;
   printed as JSON and written into docs/benchmarks.md ("## Sweep vs. the driver floor").

--profile writes a pyinstrument profile of one dbfleet sweep to bench/out/.
--cpu-profile runs one more sweep under cProfile with a process-time clock (and the garbage
collector timed through gc.callbacks) and writes where its CPU goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import (REPO, RssSampler, fresh_store, import_inventory, machine, now_utc, select_inventory,
                    store_url, update_doc)

from app.collector_state import CollectorStates
from app.settings import Settings
from app.scheduler import tune_gc
from app.sweep import Selector, Sweeper
from collectors.engines import pg

HEADING = "## Sweep vs. the driver floor"
SELECTOR = Selector(tags=(("fleet", "bench"),))


class Recorder:
    """Wraps PgConnection.fetch to capture each connection's statements while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.calls: dict[int, list[tuple[str, tuple[Any, ...]]]] = defaultdict(list)
        original = pg.PgConnection.fetch
        recorder = self

        async def fetch(conn: pg.PgConnection, sql: str, *args: Any) -> list[dict[str, Any]]:
            if recorder.on:
                recorder.calls[id(conn)].append((sql, args))
            return await original(conn, sql, *args)

        pg.PgConnection.fetch = fetch


def replay_plan(sweeper: Sweeper, recorder: Recorder) -> list[tuple[Any, list[tuple[str, tuple]]]]:
    """(raw asyncpg connection, recorded statements) for every instance the warm-up reached."""
    plan = []
    for held in sweeper.pool._held.values():
        if held.conn is not None and id(held.conn) in recorder.calls:
            plan.append((held.conn.raw, recorder.calls[id(held.conn)]))
    return plan


async def floor_round(plan, concurrency: int) -> tuple[float, float]:
    sem = asyncio.Semaphore(concurrency)

    async def one(raw, calls) -> None:
        async with sem:
            for sql, args in calls:
                await raw.fetch(sql, *args)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(raw, calls) for raw, calls in plan))
    return time.perf_counter() - wall, time.process_time() - cpu


class StateBytes:
    """Counts the collector-state bytes each sweep writes to the store (patches and new bases)."""

    def __init__(self) -> None:
        self.patch = self.base = self.bases = 0
        original = CollectorStates.change
        counter = self

        def change(states: CollectorStates, instance_id: int, collector: str, state: Any):
            write = original(states, instance_id, collector, state)
            if write is not None:
                counter.patch += len(write.patch or "")
                counter.base += len(write.base or "")
                counter.bases += write.base is not None
            return write

        CollectorStates.change = change

    def take(self) -> dict[str, int]:
        out = {"patch_bytes": self.patch, "base_bytes": self.base, "base_rewrites": self.bases}
        self.patch = self.base = self.bases = 0
        return out


async def dbfleet_round(sweeper: Sweeper, state: StateBytes) -> tuple[float, float, dict]:
    state.take()
    wall, cpu = time.perf_counter(), time.process_time()
    summary = await sweeper.sweep(None, SELECTOR)
    elapsed = time.perf_counter() - wall, time.process_time() - cpu
    return *elapsed, {**summary.as_json(), "state": state.take()}


async def profile_sweep(sweeper: Sweeper, n: int) -> Path:
    from pyinstrument import Profiler

    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    profiler = Profiler(interval=0.001, async_mode="enabled")
    profiler.start()
    await sweeper.sweep(None, SELECTOR)
    profiler.stop()
    path = out / f"profile-sweep-{n}.txt"
    path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    return path


# cProfile function keys (file suffix, function name) whose cumulative process time makes a row.
CPU_PARTS = [
    ("collectors: instance SQL through the driver, rows to dicts (PgConnection.fetch)", "collectors/engines/pg.py",
     "fetch"),
    ("collectors: query_stats.transform", "collectors/postgres/query_stats.py", "transform"),
    ("collectors: health.transform", "collectors/postgres/health.py", "transform"),
    ("store: record_runs (one statement per instance, JSON encoding)", "app/findings.py", "record_runs"),
    ("store: claim (advisory locks per (instance, collector), state seq)", "app/run_record.py", "claim"),
]


async def cpu_profile(sweeper: Sweeper) -> dict:
    """One sweep under cProfile (process-time clock); GC pauses timed separately."""
    import cProfile
    import gc
    import pstats

    gc_s, started = [0.0], [0.0]

    def on_gc(phase: str, _info: dict) -> None:
        if phase == "start":
            started[0] = time.process_time()
        else:
            gc_s[0] += time.process_time() - started[0]

    profiler = cProfile.Profile(time.process_time)
    gc.callbacks.append(on_gc)
    cpu = time.process_time()
    profiler.enable()
    try:
        await sweeper.sweep(None, SELECTOR)
    finally:
        profiler.disable()
        gc.callbacks.remove(on_gc)
    total = time.process_time() - cpu
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    parts = {}
    for label, suffix, name in CPU_PARTS:
        parts[label] = sum(v[3] for (f, _, n), v in stats.items() if f.endswith(suffix) and n == name)
    parts["everything else: event loop, asyncpg protocol, pool, other collectors' Python, sweeper"] = \
        total - sum(parts.values())
    parts["garbage collector (spread over all rows above)"] = gc_s[0]
    return {"total_s": round(total, 3), "parts": {k: round(v, 3) for k, v in parts.items()}}


async def run(args: argparse.Namespace) -> dict:
    settings = Settings()
    url = store_url()
    store = await fresh_store(url)
    await import_inventory(store, select_inventory(args.inventory, args.instances))
    recorder = Recorder()
    state = StateBytes()
    tune_gc()  # as the worker does
    sweeper = Sweeper(store, settings)
    rss = RssSampler()
    try:
        first = await sweeper.sweep(None, SELECTOR)
        recorder.on = True
        second = await sweeper.sweep(None, SELECTOR)
        recorder.on = False
        plan = replay_plan(sweeper, recorder)
        floor, fleet = [], []
        for _ in range(args.sweeps):
            rss.reset()
            w, c = await floor_round(plan, sweeper.concurrency)
            floor.append((w, c, rss.peak))
            rss.reset()
            w, c, summary = await dbfleet_round(sweeper, state)
            fleet.append((w, c, rss.peak, summary))
        profile = await profile_sweep(sweeper, args.instances) if args.profile else None
        cpu = await cpu_profile(sweeper) if args.cpu_profile else None
    finally:
        rss.close()
        await sweeper.close()
        await store.dispose()
    statements = sum(len(calls) for _, calls in plan)
    result = report(args, settings, first.as_json(), second.as_json(), plan, statements, floor, fleet, profile)
    result["cpu_profile"] = cpu
    return result


def report(args, settings, first, second, plan, statements, floor, fleet, profile) -> dict:
    med = lambda xs: statistics.median(xs)  # noqa: E731
    f_wall, f_cpu, f_rss = med([x[0] for x in floor]), med([x[1] for x in floor]), max(x[2] for x in floor)
    d_wall, d_cpu, d_rss = med([x[0] for x in fleet]), med([x[1] for x in fleet]), max(x[2] for x in fleet)
    return {
        "instances": args.instances, "connections_replayed": len(plan), "statements_per_sweep": statements,
        "concurrency": settings.worker.concurrency, "store_pool_size": int(os.environ.get("DBFLEET_STORE__POOL_SIZE", "32")),
        "sweeps": args.sweeps, "warmup": [first, second], "last_sweep": fleet[-1][3],
        "floor": {"wall_s": round(f_wall, 3), "cpu_s": round(f_cpu, 3), "peak_rss_mb": round(f_rss / 2**20, 1),
                  "walls": [round(x[0], 3) for x in floor]},
        "dbfleet": {"wall_s": round(d_wall, 3), "cpu_s": round(d_cpu, 3), "peak_rss_mb": round(d_rss / 2**20, 1),
                    "walls": [round(x[0], 3) for x in fleet]},
        "ratio": {"wall": round(d_wall / f_wall, 2), "cpu": round(d_cpu / f_cpu, 2)},
        "profile": str(profile.relative_to(REPO)) if profile else None,
        "state": _state_bytes([x[3]["state"] for x in fleet], args.instances),
    }


def _state_bytes(rounds: list[dict[str, int]], instances: int) -> dict[str, Any]:
    med = {k: int(statistics.median(r[k] for r in rounds)) for k in ("patch_bytes", "base_bytes", "base_rewrites")}
    return {**med, "per_instance": (med["patch_bytes"] + med["base_bytes"]) // max(instances, 1), "sweeps": rounds}


def markdown(r: dict, command: str) -> str:
    f, d, ratio = r["floor"], r["dbfleet"], r["ratio"]
    last = r["last_sweep"]
    return f"""### {r['instances']} instances ({now_utc()})

`{command}`

{r['connections_replayed']} held-open connections, {r['statements_per_sweep']} statements per sweep,
concurrency {r['concurrency']}, store pool {r['store_pool_size']}; median of {r['sweeps']} sweeps after 2 warm-up sweeps.
Last dbfleet sweep: {last['ok']} collector runs ok, {last['failed']} failed, {last['skipped']} skipped,
{last['findings_open']} open findings.

| | wall s | CPU s | peak RSS MB |
|---|---:|---:|---:|
| floor (bare asyncpg, same SQL, same connections) | {f['wall_s']} | {f['cpu_s']} | {f['peak_rss_mb']} |
| dbfleet sweep (all PostgreSQL collectors, stored) | {d['wall_s']} | {d['cpu_s']} | {d['peak_rss_mb']} |
| **ratio dbfleet / floor** | **{ratio['wall']}×** | **{ratio['cpu']}×** | |

Individual walls: floor {f['walls']}, dbfleet {d['walls']}.

Collector state written to the store per steady sweep (median): {r['state']['patch_bytes']:,} bytes of
patches and {r['state']['base_bytes']:,} bytes of rewritten bases ({r['state']['base_rewrites']} bases), i.e.
{r['state']['per_instance']:,} bytes per instance; sweeps: {r['state']['sweeps']}.
"""


INTRO = """Produced by `bench/sweep.py` (it rewrites the blocks below). The fleet comes from
`bench/fleet.py up` (see bench/README.md). Both sides run in the same process, alternating, on the
same held-open asyncpg connections: the floor replays exactly the statements dbfleet's collectors sent
during a recorded warm-up sweep and discards the rows; dbfleet runs the collectors, transforms, and
stores everything in the store database on 127.0.0.1:5432. RSS is the whole process (both sides share
it), so the RSS column says how much the process grew during that side's phase at most.

Machine: """


def cpu_markdown(r: dict) -> str:
    prof, floor_cpu = r["cpu_profile"], r["floor"]["cpu_s"]
    rows = "\n".join(f"| {label} | {s} | {100 * s / prof['total_s']:.0f} % |" for label, s in prof["parts"].items())
    return f"""### Where a sweep's CPU goes, {r['instances']} instances ({now_utc()})

One steady sweep under cProfile with a process-time clock (`--cpu-profile`): {prof['total_s']} s of
CPU with the profiler on (its overhead inflates Python-heavy code; without it the sweep took
{r['dbfleet']['cpu_s']} s, the floor {floor_cpu} s). Rows are cumulative per function and do not overlap,
except the garbage collector's pauses, which fall inside whichever row allocated at the time.

| part | CPU s (profiled) | share |
|---|---:|---:|
{rows}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inventory", type=Path, default=Path("/tmp/dbf_bench_fleet.yaml"))
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--sweeps", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--cpu-profile", action="store_true")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        command = (f"python bench/sweep.py --inventory {args.inventory} --instances {args.instances} "
                   f"--sweeps {args.sweeps}" + (" --cpu-profile" if args.cpu_profile else ""))
        update_doc(HEADING, f"sweep.py N={args.instances}", markdown(result, command), INTRO + machine() + ".")
    if not args.no_doc and result["cpu_profile"]:
        update_doc(HEADING, f"sweep.py profile N={args.instances}", cpu_markdown(result), INTRO + machine() + ".")


if __name__ == "__main__":
    main()
