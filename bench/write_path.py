"""The store write of a sweep, alone: Recorder.write_runs for N instances, steady state.

    python bench/write_path.py --instances 200 --rounds 8

No monitored server: each instance's runs are made up to look like a steady full PostgreSQL
sweep (health samples, query statistics with state patches and texts, unchanged index findings
whose last_seen is bumped, one finding that changes severity every round, a partition finding
that comes and goes). Runs against its own store database (dbf_wp14_write_path, created and
migrated here, dropped at the end) at the sweep's concurrency. Prints, per round after two
warm-up rounds, wall and process CPU, and their medians, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import Store, migrate
from app.findings import InstanceRef, RunRecord
from app.run_record import Recorder
from app.store_partitions import maintain_store_partitions
from collectors.spec import Finding, QueryStat, Result, Sample, Severity

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "dbf_wp14_write_path"


def runs_for(i: int, rnd: int, at: datetime) -> list[RunRecord]:
    health = Result(samples=[Sample(f"m{k}", float(k * rnd)) for k in range(12)],
                    findings=[Finding("long_transaction", "pid", Severity.critical if rnd % 2 else Severity.warning,
                                      "A long transaction", {"seconds": 90 + rnd})])
    stats = [QueryStat(f"q{i}_{k}", "app", "shop", calls=k + rnd, total_ms=k * 1.5, rows=k, interval_s=60,
                       text=f"select * from t{k} where id = $1") for k in range(40)]
    query_stats = Result(query_stats=stats, samples=[Sample("calls_total", float(rnd))],
                         state={"counters": {f"q{k}": [k + rnd, k * 2.0, k] for k in range(40)},
                                "window": list(range(rnd, rnd + 30))})
    indexes = Result(findings=[Finding("unused_index", f"public.idx{k}", Severity.warning, f"Index idx{k} unused",
                                       {"scans": 0, "bytes": 8192 * k}, f"DROP INDEX CONCURRENTLY public.idx{k};")
                               for k in range(6)])
    partitions = Result(findings=[Finding("no_future_partition", "public.events", Severity.warning, "No partition ahead",
                                          {"ahead": 0})] if rnd % 3 == 0 else [])
    replication = Result(samples=[Sample("replication_lag_seconds", 0.5 * rnd, "standby")])
    return [RunRecord(name, at, 3.0, result) for name, result in (
        ("health", health), ("query_stats", query_stats), ("index_advice", indexes), ("partitions", partitions),
        ("replication", replication))]


async def main(n: int, rounds: int, concurrency: int) -> dict:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'drop database if exists "{DB}" with (force)')
    await admin.execute(f'create database "{DB}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{DB}"
    await asyncio.to_thread(migrate, url)
    store = Store(url, pool_size=concurrency)
    try:
        async with store.raw() as conn:
            await maintain_store_partitions(conn, premake_days=2, retention_days=14)
            ids = [await conn.fetchval(
                "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
                "values ($1, 'postgres', 'h', 5432, 'app', 'postgres', 'prefer', '{\"env\": \"bench\"}') returning id",
                f"pg-{k}") for k in range(n)]
        refs = [InstanceRef(iid, f"pg-{k}", "postgres", {"env": "bench"}) for k, iid in enumerate(ids)]
        recorder = Recorder()
        sem = asyncio.Semaphore(concurrency)
        t0 = datetime.now(UTC) - timedelta(hours=1)
        out = []
        for rnd in range(rounds + 2):
            at = t0 + timedelta(minutes=rnd)

            async def one(ref: InstanceRef, rnd: int = rnd, at: datetime = at) -> None:
                async with sem, store.raw() as conn:
                    await recorder.write_runs(conn, ref, runs_for(ref.id, rnd, at))

            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(r) for r in refs))
            out.append((time.perf_counter() - wall, time.process_time() - cpu))
        steady = out[2:]
        return {"instances": n, "rounds": rounds, "concurrency": concurrency,
                "wall_s": [round(w, 3) for w, _ in steady], "cpu_s": [round(c, 3) for _, c in steady],
                "median_wall_s": round(statistics.median(w for w, _ in steady), 3),
                "median_cpu_s": round(statistics.median(c for _, c in steady), 3)}
    finally:
        await store.dispose()
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=32)
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.instances, a.rounds, a.concurrency))))
