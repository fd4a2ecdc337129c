"""Doing no harm, measured: dbfleet's share of each monitored database's statement time.

    python bench/overhead.py --databases 8 --minutes 10 --rate 25 --mariadb-schemas 4

Starts its own PostgreSQL 15 cluster (like bench/fleet.py: temp dir, free port, pg_stat_statements
preloaded) with D databases copied from the fleet's template (planted problems) plus pgbench
tables, owned by the login role `app`. Registers them in a fresh store (dbf_bench_overhead_store)
as the login role `dbfleet`, then runs, for the given minutes:
  - the real `dbfleet worker` (APScheduler, default collector intervals, alert dispatcher) as a
    subprocess, and
  - a steady workload: one rate-limited pgbench client per database (-R tps; 9/10 TPC-B-like,
    1/10 a small report query), as `app`.
At the end, pg_stat_statements of each database is diffed against the snapshot taken at the start
and split by userid: dbfleet's total (exec + plan) time as a share of the database's total
statement time. The harness's own snapshots run as postgres and are excluded from both sides.
The result is written to docs/benchmarks.md ("## Overhead on monitored databases").

Every registered PostgreSQL collector runs at its default interval, the live-troubleshooting ones
included: activity every minute (sessions, lock trees, xmin horizon, and the wait-event sampling:
wait_event_sessions samples), vacuum and wal_health. Server-level collectors (activity, health,
wal_health, ...) run once per server, on its home entry, so their statements land in one database:
the run also reports the server-wide share, activity's own statements (recognised by the catalog
functions only its SQL calls) and the wait samples it stored, and fails loudly if a collector the
issue names did not run.

With --mariadb-schemas S (default 4; 0 leaves it out) a throwaway MariaDB with performance_schema ON
runs beside it, S schemas each with one paced client, monitored by the same worker: its activity and
wait sampling (performance_schema wait summary deltas) run at their default intervals too, and its
share comes from performance_schema (bench/overhead_mysql.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import overhead_mysql
from common import REPO, fresh_store, import_inventory, machine, now_utc, update_doc
from fleet import SCHEMA, TEMPLATE, init_cluster, stop

from collectors.postgres import activity

HEADING = "## Overhead on monitored databases"
STORE = "postgresql://postgres@127.0.0.1:5432/dbf_bench_overhead_store"
SNAPSHOT = """
select r.rolname as role, sum(s.calls)::bigint as calls,
       sum(s.total_exec_time + s.total_plan_time)::float8 as ms
from pg_stat_statements s join pg_roles r on r.oid = s.userid
where s.dbid = (select oid from pg_database where datname = current_database())
group by r.rolname
"""
# dbfleet's own statements, to find the activity collector's among them.
FLEET_STATEMENTS = """
select s.queryid, s.query, s.calls::bigint as calls, (s.total_exec_time + s.total_plan_time)::float8 as ms
from pg_stat_statements s join pg_roles r on r.oid = s.userid
where s.dbid = (select oid from pg_database where datname = current_database()) and r.rolname = 'dbfleet'
"""
# Only the activity collector calls these (sessions with their blockers; the other xmin holders).
ACTIVITY_MARKERS = ("pg_blocking_pids", "pg_prepared_xacts")
assert all(any(m in sql for sql in (*activity.SESSIONS_SQL.values(), activity.HORIZON_SQL)) for m in ACTIVITY_MARKERS)
# The collectors issue 16 asks this benchmark to cover: the wait sampling is the activity collector's.
REQUIRED = ("activity", "vacuum", "wal_health")


# One transaction in ten is a small report (an aggregate over the 100k pgbench accounts, a few ms),
# the rest pgbench's TPC-B-like update transaction: a lightly loaded OLTP database.
REPORT_SQL = "select bid, count(*), sum(abalance) from pgbench_accounts group by bid;\n"


async def setup_cluster(port: int, dbs: list[str]) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres")
    try:
        await conn.execute("create role dbfleet login in role pg_monitor, pg_read_all_data")
        await conn.execute("create role app login")
        await conn.execute(f"create database {TEMPLATE}")
        t = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=TEMPLATE)
        await t.execute(SCHEMA)
        await t.close()
        for db in dbs:
            await conn.execute(f"create database {db} template {TEMPLATE} owner app")
    finally:
        await conn.close()


def pgbench(port: int, db: str, *args: str) -> list[str]:
    return ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "app", *args, db]


async def snapshot(port: int, db: str) -> dict[str, tuple[int, float]]:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=db)
    try:
        roles = {r["role"]: (r["calls"], r["ms"]) for r in await conn.fetch(SNAPSHOT)}
        activity_calls, activity_ms = 0, 0.0
        for r in await conn.fetch(FLEET_STATEMENTS):
            if any(m in r["query"] for m in ACTIVITY_MARKERS):
                activity_calls, activity_ms = activity_calls + r["calls"], activity_ms + r["ms"]
        return roles | {"dbfleet:activity": (activity_calls, activity_ms)}
    finally:
        await conn.close()


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(DBFLEET_DATABASE_URL=STORE, DBFLEET_WORKER__METRICS_PORT="0",
               DBFLEET_CONFIG=str(REPO / "bench" / "dbfleet-bench.yaml"))
    return env


def diff(before: dict, after: dict) -> dict[str, tuple[int, float]]:
    return {role: (after[role][0] - before.get(role, (0, 0.0))[0], after[role][1] - before.get(role, (0, 0.0))[1])
            for role in after}


async def run(args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="dbf_bench_overhead_"))
    shutil.chown(root, "postgres")
    cluster = init_cluster(root, "c", 100)
    procs: list[subprocess.Popen] = []
    my: overhead_mysql.MariaDBFleet | None = None
    try:
        port, dbs = cluster["port"], [f"dbf_bench_ovh_{i:02d}" for i in range(args.databases)]
        await setup_cluster(port, dbs)
        for db in dbs:
            subprocess.run(pgbench(port, db, "-i", "-q", "-s", "1"), check=True, capture_output=True)
        if args.mariadb_schemas:
            my = overhead_mysql.start(args.mariadb_schemas)
        store = await fresh_store(STORE)
        await import_inventory(store, [{"name": db.replace("_", "-"), "engine": "postgres", "host": "127.0.0.1",
                                        "port": port, "dbname": db, "user": "dbfleet", "tls_mode": "disable",
                                        "tags": {"fleet": "overhead"}} for db in dbs] + (my.entries if my else []))
        await store.dispose()
        before = {db: await snapshot(port, db) for db in dbs}
        my_before = await overhead_mysql.snapshot(my.server.port) if my else {}
        t0 = time.monotonic()
        seconds = int(args.minutes * 60)
        report = root / "report.sql"
        report.write_text(REPORT_SQL)
        mix = ["-b", "tpcb-like@9", "-f", f"{report}@1"]
        procs = [subprocess.Popen(pgbench(port, db, "-n", "-c", "1", "-j", "1", "-R", str(args.rate),
                                          "-T", str(seconds), *mix), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for db in dbs]
        procs.append(subprocess.Popen([str(REPO / ".venv" / "bin" / "dbfleet"), "worker"], env=worker_env(),
                                      stdout=subprocess.DEVNULL, stderr=open(root / "worker.log", "wb")))
        my_clients = [asyncio.create_task(overhead_mysql.workload(my.server.port, schema, args.rate, seconds))
                      for schema in (my.schemas if my else [])]
        for p in procs[:-1]:
            await asyncio.to_thread(p.wait)
        await asyncio.gather(*my_clients)
        elapsed = time.monotonic() - t0
        after = {db: await snapshot(port, db) for db in dbs}
        my_after = await overhead_mysql.snapshot(my.server.port) if my else {}
        runs = await collector_runs()
        stored = await wait_samples_stored()
        my_points = await wait_samples_stored("wait_event_avg_sessions")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        stop(cluster)
        overhead_mysql.stop(my)
        shutil.rmtree(root, ignore_errors=True)
    result = summarise(args, elapsed, {db: diff(before[db], after[db]) for db in dbs}, runs, stored)
    if my is not None:
        result["mariadb"] = {"schemas": len(my.schemas), **overhead_mysql.summarise(my_before, my_after, my_points)}
        if not runs.get("waits:ok"):  # MySQL's wait sampling is its own collector
            print("WARNING: the MySQL waits collector never ran ok")
            result["missing_collectors"].append("waits")
    return result


async def collector_runs() -> dict[str, int]:
    conn = await asyncpg.connect(STORE)
    try:
        return {r["collector"]: r["n"] for r in await conn.fetch(
            "select collector || ':' || status as collector, count(*)::int as n from collector_runs group by 1")}
    finally:
        await conn.close()


async def wait_samples_stored(metric: str = "wait_event_sessions") -> int:
    """Points of a wait-event sampling the store holds after the run (PostgreSQL's activity collector,
    or MySQL's waits collector: wait_event_avg_sessions)."""
    conn = await asyncpg.connect(STORE)
    try:
        return await conn.fetchval("select count(*)::int from samples where metric = $1", metric)
    finally:
        await conn.close()


def summarise(args, elapsed: float, per_db: dict[str, dict[str, tuple[int, float]]], runs: dict,
              wait_samples: int = 0) -> dict:
    missing = [c for c in REQUIRED if not runs.get(f"{c}:ok")]
    if missing:
        print(f"WARNING: these collectors never ran ok, so the share leaves them out: {', '.join(missing)}")
    rows = {}
    for db, roles in per_db.items():
        fleet_ms = roles.get("dbfleet", (0, 0.0))[1]
        app_ms = roles.get("app", (0, 0.0))[1]
        rows[db] = {"dbfleet_ms": round(fleet_ms, 1), "dbfleet_calls": roles.get("dbfleet", (0, 0))[0],
                    "workload_ms": round(app_ms, 1), "workload_calls": roles.get("app", (0, 0))[0],
                    "share_pct": round(100 * fleet_ms / (fleet_ms + app_ms), 3) if fleet_ms + app_ms else None}
    shares = [r["share_pct"] for r in rows.values() if r["share_pct"] is not None]
    fleet_ms = statistics.median(r["dbfleet_ms"] for r in rows.values())
    total_fleet = sum(r["dbfleet_ms"] for r in rows.values())
    total_app = sum(r["workload_ms"] for r in rows.values())
    activity_ms = sum(roles.get("dbfleet:activity", (0, 0.0))[1] for roles in per_db.values())
    activity_calls = sum(roles.get("dbfleet:activity", (0, 0))[0] for roles in per_db.values())
    busy = statistics.median(r["workload_ms"] for r in rows.values()) / (elapsed * 1000) * 100
    return {"databases": args.databases, "minutes": round(elapsed / 60, 2), "rate_tps_per_db": args.rate,
            "share_pct": {"median": statistics.median(shares), "max": max(shares)},
            "dbfleet_ms_per_db": round(fleet_ms, 1), "workload_core_pct": round(busy, 1),
            "server_share_pct": round(100 * total_fleet / (total_fleet + total_app), 3) if total_fleet + total_app else None,
            "activity": {"calls": activity_calls, "ms": round(activity_ms, 1),
                         "share_of_server_pct": round(100 * activity_ms / (total_fleet + total_app), 4)
                         if total_fleet + total_app else None, "wait_samples_stored": wait_samples},
            "missing_collectors": missing, "collector_runs": runs, "per_db": rows}


def markdown(r: dict, command: str) -> str:
    lines = "\n".join(f"| {db} | {v['workload_calls']} | {v['workload_ms']} | {v['dbfleet_calls']} | "
                      f"{v['dbfleet_ms']} | {v['share_pct']} % |" for db, v in r["per_db"].items())
    runs = ", ".join(f"{k} {v}" for k, v in sorted(r["collector_runs"].items()))
    return f"""### {r['databases']} databases, {r['minutes']} minutes ({now_utc()})

`{command}`

Workload: one pgbench client per database at {r['rate_tps_per_db']} tps, role `app`: 9 in 10 transactions\npgbench's TPC-B-like update, 1 in 10 a report (`select bid, count(*), sum(abalance) from pgbench_accounts group by bid`).
dbfleet: `dbfleet worker` at default intervals, role `dbfleet`. Collector runs: {runs}.

**dbfleet's share of statement time: median {r['share_pct']['median']} %, worst database
{r['share_pct']['max']} %** (target ≤ 0.5 %); over the whole server {r.get('server_share_pct')} %.

Server-level collectors run once per server, on its home entry, so their statements count in that
one database (the worst one above). The activity collector (sessions, lock trees, xmin horizon and
the wait-event sampling, every minute): {activity_line(r)}.{missing_line(r)}{mariadb_line(r)}

The share depends on how busy the database is, so the absolute figure matters as much: over the
run dbfleet's statements took a median {r['dbfleet_ms_per_db']} ms per database, while the workload kept
each database's statements busy about {r['workload_core_pct']} % of one core. The window starts with
every collector's first run (index_advice and partitions run hourly, query_stats every 5 minutes,
health, replication and activity every minute), so it is the most expensive 10 minutes of an hour; a database
doing less than about {round(r['dbfleet_ms_per_db'] / 0.005 / 1000, 1)} s of statement work per 10
minutes would see more than 0.5 % in that window.

| database | workload calls | workload ms | dbfleet calls | dbfleet ms | dbfleet share |
|---|---:|---:|---:|---:|---:|
{lines}
"""


def activity_line(r: dict) -> str:
    a = r.get("activity")
    if not a:
        return "not measured in this run"
    return (f"{a['calls']} statements, {a['ms']} ms, {a['share_of_server_pct']} % of the server's statement "
            f"time; {a['wait_samples_stored']} wait_event_sessions points stored")


def mariadb_line(r: dict) -> str:
    m = r.get("mariadb")
    if not m:
        return ""
    return (f"\n\nMariaDB beside it ({m['schemas']} schemas on one server with performance_schema ON, one client "
            f"per schema at the same rate, same worker): **dbfleet's share of the server's statement time "
            f"{m['share_pct']} %** ({m['dbfleet_calls']} statements, {m['dbfleet_ms']} ms vs the workload's "
            f"{m['workload_calls']}, {m['workload_ms']} ms). Of that, activity {m['activity']['calls']} statements "
            f"{m['activity']['ms']} ms and wait sampling {m['waits']['calls']} statements {m['waits']['ms']} ms; "
            f"{m['wait_points_stored']} wait_event_avg_sessions points stored.")


def missing_line(r: dict) -> str:
    missing = r.get("missing_collectors")
    return f" **Did not run: {', '.join(missing)}** (the share leaves them out)." if missing else ""


INTRO = """Produced by `bench/overhead.py` from each monitored database's own pg_stat_statements
(diffed between the start and the end of the run, split by userid). Machine: """


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--databases", type=int, default=8)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--rate", type=int, default=25, help="pgbench transactions per second per database")
    p.add_argument("--mariadb-schemas", type=int, default=4,
                   help="schemas on a throwaway MariaDB monitored beside the PostgreSQL databases (0: none)")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--from-json", type=Path, help="rewrite the docs block from a saved result instead of running")
    args = p.parse_args()
    result = json.loads(args.from_json.read_text()) if args.from_json else asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        command = (f"python bench/overhead.py --databases {args.databases} --minutes {args.minutes} --rate {args.rate}"
                   f" --mariadb-schemas {args.mariadb_schemas}")
        update_doc(HEADING, "overhead.py", markdown(result, command), INTRO + machine() + ".")


if __name__ == "__main__":
    main()
