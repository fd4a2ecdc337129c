"""Doing no harm with 1,000 data quality checks over the bench fleet, at their schedules.

    python bench/fleet.py up --instances 500 --clusters 5      # once (bench/README.md)
    python bench/quality.py --inventory /tmp/dbf_bench_fleet.yaml --instances 200 --minutes 10

Registers the first N fleet databases in a fresh store (dbf_bench_quality_store) as the login role
`dbfleet` and defines five checks per database (so 200 databases = 1,000 checks), each scoped to
its own instance, at the schedules a DBA would give them once the scan review has told them what
is costly:
  - freshness of orders.created_at (error after 1 hour), every minute;
  - volume of orders per hour (count on created_at), every 5 minutes;
  - completeness of customers.email and customers.name over the default window (the newest
    10,000 rows by primary key), every 5 minutes;
  - an assertion (orders of the last hour whose customer is missing), every 15 minutes;
  - the schema of customers, every 15 minutes.
Its setup adds the index those need, orders (created_at), to each database if it is missing
(`create index if not exists`, as postgres; bench/fleet.py's schema does not have it).
Then runs the worker's quality job (app/quality/job.py: a tick every 30 s, only what is due, each
check at its own phase in its period, so a 15-minute check may not run in a shorter run) for the
given minutes of wall time, while a paced workload (one client per database, --rate
statements/s) keeps the databases busy. It reports:
  - per tick: wall and CPU of the dbfleet process, checks run, peak RSS;
  - per monitored database, from its own pg_stat_statements diffed over the run: the `dbfleet`
    role's statement time against the database's total and the slowest single dbfleet statement
    (against the collectors' statement_timeout), and the workload's latency with and without the
    checks (the first and last minute run without them);
  - per check kind, from the same pg_stat_statements, the server time of the `dbfleet` role's
    statements grouped by their leading `/* dbfleet:quality:<kind> */` tag (untagged: session
    setup and the like);
  - store growth: samples and result rows per check run.
The result is written to docs/benchmarks.md ("## Data quality checks: doing no harm").

With --definition-review the 1,000 definitions also go through the definition-time scan review
(EXPLAIN on every instance in scope) and its duration is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
from common import (
    RssSampler,
    fresh_store,
    import_inventory,
    machine,
    now_utc,
    select_inventory,
    update_doc,
)

from app.quality.definitions import parse_definitions, save_check
from app.quality.job import TICK_S
from app.quality.refusals import define_checks
from app.quality.runner import QualityRunner
from app.settings import Settings

HEADING = "## Data quality checks: doing no harm"
STORE = "postgresql://postgres@127.0.0.1:5432/dbf_bench_quality_store"
SNAPSHOT = """
select r.rolname as role, sum(s.calls)::bigint as calls,
       sum(s.total_exec_time + s.total_plan_time)::float8 as ms, max(s.max_exec_time)::float8 as max_ms
from pg_stat_statements s join pg_roles r on r.oid = s.userid
where s.dbid = (select oid from pg_database where datname = current_database())
group by r.rolname
"""
# Per statement of the dbfleet role, to group its server time by the check kind's leading tag.
STATEMENTS = """
select s.queryid, s.query, s.calls, (s.total_exec_time + s.total_plan_time)::float8 as ms,
       s.max_exec_time::float8 as max_ms
from pg_stat_statements s join pg_roles r on r.oid = s.userid
where r.rolname = 'dbfleet' and s.dbid = (select oid from pg_database where datname = current_database())
"""
KIND_TAG = re.compile(r"/\* dbfleet:quality:(\w+) \*/")
INDEXES = ("create index if not exists orders_created_at_idx on orders (created_at)",)
WORKLOAD = ("select * from customers where id = $1", "select sum(amount) from orders where customer_id = $1",
            "insert into orders (customer_id, status, amount, created_at) values ($1, 'open', 1.5, now())")


def checks_for(instance: str) -> list[dict]:
    every = lambda n: {"count": n, "period": "minute"}
    base = {"instances": [instance], "labels": {"source": "bench", "pipeline": instance}}
    return [
        {**base, "name": f"{instance}.orders_fresh", "kind": "freshness", "tables": ["public.orders"],
         "loaded_at_field": "created_at", "error_after": {"count": 1, "period": "hour"}, "every": every(1)},
        {**base, "name": f"{instance}.orders_volume", "kind": "volume", "tables": ["public.orders"],
         "loaded_at_field": "created_at", "every": every(5)},
        {**base, "name": f"{instance}.customers_complete", "kind": "completeness", "tables": ["public.customers"],
         "columns": ["email", "name"], "max_null_share": 0.01, "every": every(5)},
        {**base, "name": f"{instance}.orders_orphans", "kind": "assertion", "every": every(15),
         "query": "select o.id from orders o left join customers c on c.id = o.customer_id where c.id is null "
                  "and o.created_at > now() - interval '1 hour'"},
        {**base, "name": f"{instance}.customers_shape", "kind": "schema", "tables": ["public.customers"],
         "every": every(15)},
    ]


async def add_indexes(item: dict) -> None:
    """The indexes the bench's checks need, if missing (a standby cannot take them: skipped)."""
    conn = await asyncpg.connect(host=item["host"], port=item["port"], user="postgres", database=item["dbname"])
    try:
        for ddl in INDEXES:
            await conn.execute(ddl)
        await conn.execute("analyze orders")
    except asyncpg.ReadOnlySQLTransactionError:
        pass
    finally:
        await conn.close()


async def snapshot(item: dict) -> tuple[dict[str, tuple[int, float, float]], dict[int, tuple[str, int, float, float]]]:
    """(per role: calls, ms, max ms; per dbfleet statement: text, calls, ms, max ms)."""
    conn = await asyncpg.connect(host=item["host"], port=item["port"], user="postgres", database=item["dbname"])
    try:
        roles = {r["role"]: (r["calls"], r["ms"], r["max_ms"] or 0.0) for r in await conn.fetch(SNAPSHOT)}
        statements = {r["queryid"]: (r["query"], r["calls"], r["ms"], r["max_ms"] or 0.0)
                      for r in await conn.fetch(STATEMENTS)}
        return roles, statements
    finally:
        await conn.close()


def by_kind(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """The dbfleet role's calls, server ms and slowest call over the run, per check kind tag."""
    out: dict[str, dict[str, float]] = {}
    for name, (_, statements) in after.items():
        earlier = before[name][1]
        for queryid, (text, calls, ms, max_ms) in statements.items():
            _, calls0, ms0, _ = earlier.get(queryid, ("", 0, 0.0, 0.0))
            if calls <= calls0:
                continue
            tag = KIND_TAG.search(text or "")
            kind = out.setdefault(tag.group(1) if tag else "(untagged)", {"calls": 0, "ms": 0.0, "max_ms": 0.0})
            kind["calls"] += calls - calls0
            kind["ms"] += ms - ms0
            kind["max_ms"] = max(kind["max_ms"], max_ms)
    return out


async def workload(items: list[dict], rate: float, stop: Any, latencies: list[tuple[float, float]]) -> None:
    """One paced client per database, as postgres: (monotonic time, statement ms) per statement."""
    async def client(item: dict) -> None:
        conn = await asyncpg.connect(host=item["host"], port=item["port"], user="postgres", database=item["dbname"],
                                     server_settings={"application_name": "bench-workload"})
        try:
            while not stop.is_set():
                sql = random.choice(WORKLOAD)
                t0 = time.perf_counter()
                await conn.execute(sql, random.randint(1, 2000))
                latencies.append((time.monotonic(), (time.perf_counter() - t0) * 1000))
                await asyncio.sleep(1 / rate)
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in items))


def workload_process(items: list[dict], rate: float, stop: Any, out: Any) -> None:
    """The paced workload in its own process and event loop; its latencies go back through `out`."""
    latencies: list[tuple[float, float]] = []
    asyncio.run(workload(items, rate, stop, latencies))  # time.monotonic() is the machine's clock: comparable
    out.put(latencies)


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 100 else max(values, default=0.0)


async def run(args: argparse.Namespace) -> dict:
    items = select_inventory(args.inventory, args.instances + 2)[: args.instances]
    store = await fresh_store(STORE)
    await import_inventory(store, items)
    settings = Settings(database_url=STORE, worker={"concurrency": args.concurrency})
    raw = [c for i in items for c in checks_for(i["name"])]
    checks, problems = parse_definitions(raw)
    assert not problems, problems
    t0 = time.perf_counter()
    if args.definition_review:
        defined = await define_checks(store, settings, checks, "api", "bench")
        assert not defined.refused, defined.refused[:3]
    else:
        async with store.raw() as conn:
            for check in checks:
                await save_check(conn, check, "api", "bench")
    define_s = time.perf_counter() - t0
    for item in items:
        await add_indexes(item)
    before = {i["name"]: await snapshot(i) for i in items}
    # The workload runs in a process of its own: on this event loop, each tick's CPU (the checks'
    # Python) held its statements back and counted as the database's latency.
    spawn = multiprocessing.get_context("spawn")
    stop, out = spawn.Event(), spawn.Queue()
    load = spawn.Process(target=workload_process, args=(items, args.rate, stop, out))
    load.start()
    quiet_s = 60.0
    await asyncio.sleep(quiet_s)  # the workload alone first: its latency without checks
    checks_from = time.monotonic()
    runner, rss, ticks = QualityRunner(store, settings), RssSampler(), []
    deadline = time.monotonic() + args.minutes * 60
    try:
        while time.monotonic() < deadline:
            w, c = time.perf_counter(), time.process_time()
            summary = await runner.run(due_only=True)
            ticks.append({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                          "runs": len(summary.outcomes), "failed": len(summary.failures())})
            await asyncio.sleep(max(0.0, TICK_S - (time.perf_counter() - w)))
    finally:
        await runner.close()
        rss.close()
    checks_until = time.monotonic()
    await asyncio.sleep(quiet_s)
    stop.set()
    latencies = await asyncio.to_thread(out.get, True, 300)
    load.join(timeout=60)
    after = {i["name"]: await snapshot(i) for i in items}
    async with store.raw() as conn:
        samples = await conn.fetchval("select count(*) from samples where collector like 'quality:%'")
        results = await conn.fetchval("select count(*) from quality_check_results")
        runs = await conn.fetchval("select count(*) from collector_runs where collector like 'quality:%'")
    await store.dispose()
    shares, max_ms, all_ms = [], [], 0.0
    for name, (roles, _) in after.items():
        roles0 = before[name][0]
        dbf = roles.get("dbfleet", (0, 0.0, 0.0))[1] - roles0.get("dbfleet", (0, 0.0, 0.0))[1]
        total = sum(v[1] for v in roles.values()) - sum(v[1] for v in roles0.values())
        all_ms += total
        shares.append(dbf / total if total else 0.0)
        max_ms.append(roles.get("dbfleet", (0, 0.0, 0.0))[2])
    quiet = [ms for t, ms in latencies if t < checks_from or t > checks_until]
    busy = [ms for t, ms in latencies if checks_from <= t <= checks_until]
    return {"instances": len(items), "checks": len(checks), "minutes": args.minutes, "define_s": define_s,
            "review": args.definition_review, "ticks": ticks, "peak_rss_mb": rss.peak / 2**20,
            "share_median": statistics.median(shares), "share_max": max(shares), "stmt_max_ms": max(max_ms),
            "timeout_ms": settings.worker.statement_timeout_ms, "runs": runs, "samples": samples, "results": results,
            "quiet_p50": _p(quiet, 50), "quiet_p99": _p(quiet, 99), "busy_p50": _p(busy, 50), "busy_p99": _p(busy, 99),
            "kinds": by_kind(before, after), "all_ms": all_ms}


def report(r: dict) -> str:
    walls = [t["wall_s"] for t in r["ticks"]]
    cpus = [t["cpu_s"] for t in r["ticks"]]
    busy_ticks = [t for t in r["ticks"] if t["runs"]]
    return "\n".join([
        f"Run {now_utc()} on {machine()}.",
        "",
        (f"{r['checks']} checks over {r['instances']} databases for {r['minutes']} min (tick {TICK_S} s, only due checks): "
        f"{r['runs']} check runs, {sum(t['failed'] for t in r['ticks'])} failing outcomes."),
        "",
        "| measure | value |",
        "|---|---|",
        f"| definitions stored{' (with EXPLAIN scan review)' if r['review'] else ''} | {r['define_s']:.1f} s |",
        f"| tick wall, median / max | {statistics.median(walls):.2f} s / {max(walls):.2f} s |",
        f"| tick CPU (dbfleet process), median / max | {statistics.median(cpus):.2f} s / {max(cpus):.2f} s |",
        f"| ticks with work | {len(busy_ticks)} of {len(r['ticks'])} |",
        f"| peak RSS | {r['peak_rss_mb']:.0f} MiB |",
        (f"| dbfleet share of each database's statement time, median / max | {r['share_median']:.2%} / "
        f"{r['share_max']:.2%} |"),
        f"| slowest single dbfleet statement (statement_timeout {r['timeout_ms']} ms) | {r['stmt_max_ms']:.1f} ms |",
        f"| workload latency p50 / p99 without checks | {r['quiet_p50']:.2f} / {r['quiet_p99']:.2f} ms |",
        f"| workload latency p50 / p99 while checks run | {r['busy_p50']:.2f} / {r['busy_p99']:.2f} ms |",
        f"| store rows: samples / latest results | {r['samples']} / {r['results']} |",
        "",
        kinds_table(r),
    ])


def kinds_table(r: dict) -> str:
    """Server time of dbfleet's statements per check kind, summed over the databases."""
    kinds = r["kinds"]
    dbf_ms = sum(k["ms"] for k in kinds.values())
    header = ("| statements tagged | calls | server time | mean per call | slowest call | of dbfleet's time "
              "| of all statement time |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, k in sorted(kinds.items(), key=lambda kv: -kv[1]["ms"]):
        lines.append(f"| {name} | {k['calls']:.0f} | {k['ms'] / 1000:.2f} s | {k['ms'] / max(1, k['calls']):.2f} ms "
                     f"| {k['max_ms']:.1f} ms | {k['ms'] / dbf_ms if dbf_ms else 0:.1%} | "
                     f"{k['ms'] / r['all_ms'] if r['all_ms'] else 0:.2%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, default=Path("/tmp/dbf_bench_fleet.yaml"))
    parser.add_argument("--instances", type=int, default=200, help="databases; five checks each")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=5, help="workload statements per second per database")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--definition-review", action="store_true", help="define through the EXPLAIN scan review")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = report(result)
    print(text)
    print(json.dumps({k: v for k, v in result.items() if k != "ticks"}, default=str))
    if not args.no_doc:
        update_doc(HEADING, f"quality-{args.instances}", text,
                   intro="bench/quality.py: five checks per database at their schedules, through the worker's "
                         "quality job, against a paced workload; the cost on each monitored database comes from "
                         "its own pg_stat_statements.")


if __name__ == "__main__":
    main()
