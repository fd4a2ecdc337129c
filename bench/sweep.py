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
   (c) the 7-view floor (issue 14): a bare asyncpg loop over the same held-open connections that
       reads only pg_stat_statements, pg_stat_user_indexes + pg_index, pg_stat_user_tables, FK
       constraints, partition bounds, pg_stat_replication and pg_replication_slots (7 statements
       per instance, prepared once per connection as asyncpg's default cache would).
4. Median wall and CPU (process time) of each, peak RSS of the process during each, the ratios;
   statements per instance per full sweep (dbfleet's, counted per collector, against the 7-view
   floor's 7); server time per collector from the fleet's own pg_stat_statements (role dbfleet,
   diffed over the measured dbfleet sweeps, statements matched to collectors by query id); printed
   as JSON and written into docs/benchmarks.md ("## Sweep vs. the driver floor").

--statement-cache N sets the sessions' asyncpg statement_cache_size (default: the adapter's).

--profile writes a pyinstrument profile of one dbfleet sweep to bench/out/.
--cpu-profile runs one more sweep under cProfile with a process-time clock (and the garbage
collector timed through gc.callbacks) and writes where its CPU goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import dataclasses
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
from common import (
    REPO,
    RssSampler,
    fresh_store,
    import_inventory,
    machine,
    now_utc,
    select_inventory,
    store_url,
    update_doc,
)

import app.sweep as app_sweep
from app.collector_state import CollectorStates
from app.scheduler import tune_gc
from app.settings import Settings
from app.sweep import Selector, Sweeper
from collectors.engines import pg

HEADING = "## Sweep vs. the driver floor"
SELECTOR = Selector(tags=(("fleet", "bench"),))


COLLECTOR: contextvars.ContextVar[str] = contextvars.ContextVar("collector", default="(sweep)")


class Recorder:
    """Wraps PgConnection.fetch to capture each connection's statements while `on`, and which
    collector sent each (the runner is wrapped to say whose run it is)."""

    def __init__(self) -> None:
        self.on = self.counting = False
        self.calls: dict[int, list[tuple[str, tuple[Any, ...]]]] = defaultdict(list)
        self.by_collector: dict[str, int] = defaultdict(int)
        self.sql_of: dict[str, set[str]] = defaultdict(set)
        original, run_original = pg.PgConnection.fetch, app_sweep.run_collector
        recorder = self

        async def fetch(conn: pg.PgConnection, sql: str, *args: Any) -> list[dict[str, Any]]:
            if recorder.on:
                recorder.calls[id(conn)].append((sql, args))
            if recorder.counting:  # the measured (steady) dbfleet sweeps
                recorder.by_collector[COLLECTOR.get()] += 1
                recorder.sql_of[COLLECTOR.get()].add(sql)
            return await original(conn, sql, *args)

        async def run_collector(spec, conn, ctx):
            token = COLLECTOR.set(spec.name)
            try:
                return await run_original(spec, conn, ctx)
            finally:
                COLLECTOR.reset(token)

        pg.PgConnection.fetch = fetch
        app_sweep.run_collector = run_collector


# The floor: what a bare asyncpg loop reads to cover the same four families.
SEVEN_VIEWS = [
    ("select queryid, userid, calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, temp_blks_written "
     "from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())"),
    ("select s.indexrelid, s.relid, s.idx_scan, pg_relation_size(s.indexrelid) as bytes, x.indisvalid, x.indisunique, "
     "x.indkey::text from pg_stat_user_indexes s join pg_index x on x.indexrelid = s.indexrelid"),
    ("select relid, schemaname, relname, seq_scan, seq_tup_read, idx_scan, n_live_tup, n_dead_tup, last_autovacuum "
     "from pg_stat_user_tables"),
    ("select conrelid, confrelid, conkey::int2[]::text from pg_constraint where contype = 'f'"),
    ("select i.inhparent, i.inhrelid, pg_get_expr(c.relpartbound, 0) from pg_inherits i "
     "join pg_class c on c.oid = i.inhrelid"),
    ("select application_name, state, sent_lsn::text, replay_lsn::text, replay_lag from pg_stat_replication"),
    ("select slot_name, active, restart_lsn::text from pg_replication_slots"),
]


async def seven_view_round(raws: list, concurrency: int, prepared: dict) -> tuple[float, float]:
    sem = asyncio.Semaphore(concurrency)

    async def one(raw) -> None:
        async with sem:
            stmts = prepared.get(id(raw))
            if stmts is None:  # prepared once per connection, as asyncpg's own cache would
                stmts = prepared[id(raw)] = [await raw.prepare(sql) for sql in SEVEN_VIEWS]
            for stmt in stmts:
                await stmt.fetch()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(raw) for raw in raws))
    return time.perf_counter() - wall, time.process_time() - cpu


class ServerTime:
    """dbfleet's statement time on the fleet's own servers (pg_stat_statements, role dbfleet)."""

    def __init__(self, one_db: dict[int, str]) -> None:
        self.one_db = one_db  # a fleet database per server port: the extension's view is there

    async def _snapshot(self) -> dict[tuple[int, str], float]:
        out: dict[tuple[int, str], float] = {}
        for port, db in self.one_db.items():
            conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=db)
            try:
                for r in await conn.fetch(
                        "select s.queryid::text as q, sum(s.total_exec_time + s.total_plan_time) as ms "
                        "from pg_stat_statements s join pg_roles r on r.oid = s.userid "
                        "where r.rolname = 'dbfleet' group by 1"):
                    out[(port, r["q"])] = float(r["ms"])
            finally:
                await conn.close()
        return out

    async def start(self) -> None:
        self.before = await self._snapshot()

    async def per_collector(self, recorder: Recorder, one_db: dict[int, str], sweeps: int) -> dict[str, float]:
        """Milliseconds per sweep per collector; statements that no collector's SQL explains go to '(other)'."""
        after = await self._snapshot()
        owner = await self._queryids(recorder, one_db)
        out: dict[str, float] = defaultdict(float)
        for key, ms in after.items():
            spent = ms - self.before.get(key, 0.0)
            if spent > 0:
                out[owner.get(key, "(other)")] += spent / max(sweeps, 1)
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

    async def _queryids(self, recorder: Recorder, one_db: dict[int, str]) -> dict[tuple[int, str], str]:
        """Query id of each collector's SQL, from EXPLAIN (VERBOSE) in one database per server."""
        owner = {}
        for port, db in one_db.items():
            conn = await asyncpg.connect(host="127.0.0.1", port=port, user="dbfleet", database=db)
            try:
                for collector, sqls in recorder.sql_of.items():
                    for sql in sqls:
                        if "$1" in sql:
                            continue  # EXPLAIN needs values for it on 15; its time goes to '(other)'
                        try:
                            plan = await conn.fetchval(f"explain (verbose, format json) {sql}")
                        except asyncpg.PostgresError:
                            continue
                        qid = json.loads(plan)[0].get("Query Identifier")
                        if qid is not None:
                            owner[(port, str(qid))] = collector
            finally:
                await conn.close()
        return owner


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
    if args.statement_cache is not None:
        sweeper.pool.limits = dataclasses.replace(sweeper.pool.limits, statement_cache_size=args.statement_cache)
    items = select_inventory(args.inventory, args.instances)
    one_db = {i["port"]: i["dbname"] for i in reversed(items)}
    server_time = ServerTime(one_db)
    rss = RssSampler()
    try:
        first = await sweeper.sweep(None, SELECTOR)
        recorder.on = True
        second = await sweeper.sweep(None, SELECTOR)
        recorder.on = False
        plan = replay_plan(sweeper, recorder)
        floor, fleet, seven, prepared = [], [], [], {}
        await server_time.start()
        for _ in range(args.sweeps):
            rss.reset()
            w, c = await floor_round(plan, sweeper.concurrency)
            floor.append((w, c, rss.peak))
            rss.reset()
            w, c = await seven_view_round([raw for raw, _ in plan], sweeper.concurrency, prepared)
            seven.append((w, c, rss.peak))
            rss.reset()
            recorder.counting = True
            w, c, summary = await dbfleet_round(sweeper, state)
            recorder.counting = False
            fleet.append((w, c, rss.peak, summary))
        # The floors read as dbfleet too: their time is in the same views, under '(other)'.
        per_collector_ms = await server_time.per_collector(recorder, one_db, args.sweeps)
        profile = await profile_sweep(sweeper, args.instances) if args.profile else None
        cpu = await cpu_profile(sweeper) if args.cpu_profile else None
    finally:
        rss.close()
        await sweeper.close()
        await store.dispose()
    statements = sum(len(calls) for _, calls in plan)
    result = report(args, settings, first.as_json(), second.as_json(), plan, statements, floor, fleet, profile)
    result["seven_view_floor"] = _side(seven)
    result["ratio_to_seven_views"] = {"wall": round(result["dbfleet"]["wall_s"] / result["seven_view_floor"]["wall_s"], 2),
                                      "cpu": round(result["dbfleet"]["cpu_s"] / result["seven_view_floor"]["cpu_s"], 2)}
    # Counted over the measured sweeps (steady state); the replayed plan is the second warm-up's.
    per_sweep = max(len(plan), 1) * max(args.sweeps, 1)
    result["statements_per_instance"] = round(sum(recorder.by_collector.values()) / per_sweep, 2)
    result["statements_per_instance_by_collector"] = {
        k: round(v / per_sweep, 2) for k, v in sorted(recorder.by_collector.items())}
    result["server_ms_per_sweep_by_collector"] = per_collector_ms
    result["statement_cache_size"] = sweeper.pool.limits.statement_cache_size
    result["cpu_profile"] = cpu
    return result


def _side(rounds: list[tuple[float, float, int]]) -> dict[str, Any]:
    return {"wall_s": round(statistics.median(x[0] for x in rounds), 3),
            "cpu_s": round(statistics.median(x[1] for x in rounds), 3),
            "peak_rss_mb": round(max(x[2] for x in rounds) / 2**20, 1), "walls": [round(x[0], 3) for x in rounds]}


def report(args, settings, first, second, plan, statements, floor, fleet, profile) -> dict:
    med = lambda xs: statistics.median(xs)
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
    s, r7 = r["seven_view_floor"], r["ratio_to_seven_views"]
    by = ", ".join(f"{k} {v}" for k, v in r["statements_per_instance_by_collector"].items())
    server = ", ".join(f"{k} {v}" for k, v in r["server_ms_per_sweep_by_collector"].items())
    last = r["last_sweep"]
    return f"""### {r['instances']} instances ({now_utc()})

`{command}`

{r['connections_replayed']} held-open connections, {r['statements_per_sweep']} statements per sweep,
concurrency {r['concurrency']}, store pool {r['store_pool_size']}; median of {r['sweeps']} sweeps after 2 warm-up sweeps.
Last dbfleet sweep: {last['ok']} collector runs ok, {last['failed']} failed, {last['skipped']} skipped,
{last['findings_open']} open findings.

| | wall s | CPU s | peak RSS MB | statements per instance |
|---|---:|---:|---:|---:|
| floor (bare asyncpg, same SQL, same connections) | {f['wall_s']} | {f['cpu_s']} | {f['peak_rss_mb']} | {round(r['statements_per_sweep'] / max(r['connections_replayed'], 1), 2)} |
| 7-view floor (bare asyncpg, the issue's 7 catalog views, same connections) | {s['wall_s']} | {s['cpu_s']} | {s['peak_rss_mb']} | 7 |
| dbfleet sweep (all PostgreSQL collectors, stored) | {d['wall_s']} | {d['cpu_s']} | {d['peak_rss_mb']} | {r['statements_per_instance']} |
| **ratio dbfleet / floor** | **{ratio['wall']}×** | **{ratio['cpu']}×** | | |
| **ratio dbfleet / 7-view floor** (targets ≤ 2× wall, ≤ 2.5× CPU) | **{r7['wall']}×** | **{r7['cpu']}×** | | |

Statement cache per session: {r['statement_cache_size']}. Statements per instance per full sweep, by
collector: {by}. Server time per steady sweep on the fleet's servers (pg_stat_statements, role dbfleet,
ms): {server}.

Individual walls: floor {f['walls']}, 7-view floor {s['walls']}, dbfleet {d['walls']}.

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
    p.add_argument("--statement-cache", type=int, default=None,
                   help="asyncpg statement_cache_size per session (default: the adapter's)")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        command = (f"python bench/sweep.py --inventory {args.inventory} --instances {args.instances} "
                   f"--sweeps {args.sweeps}" + (" --cpu-profile" if args.cpu_profile else "")
                   + (f" --statement-cache {args.statement_cache}" if args.statement_cache is not None else ""))
        update_doc(HEADING, f"sweep.py N={args.instances}", markdown(result, command), INTRO + machine() + ".")
    if not args.no_doc and result["cpu_profile"]:
        update_doc(HEADING, f"sweep.py profile N={args.instances}", cpu_markdown(result), INTRO + machine() + ".")


if __name__ == "__main__":
    main()
