"""The store write of a sweep, alone: Recorder.write_runs for N instances, steady state.

    python bench/write_path.py --instances 200 --rounds 8 [--as-transaction]

No monitored server: each instance's runs are made up to look like a steady full PostgreSQL
sweep (health samples, query statistics with state patches and texts, unchanged index findings
whose last_seen is bumped, one finding that changes severity every round, a partition finding
that comes and goes). Runs against its own store database (dbf_wp14_write_path, created and
migrated here, dropped at the end, synchronous_commit off so that commits do not wait for the
disk) at the sweep's concurrency. Prints, per round after two
warm-up rounds, wall, process CPU and the CPU of the store backends serving it, and their
medians, as JSON. --as-transaction runs the
named statements one by one in a transaction instead of composed into one statement.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import findings, run_record
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
    # Compare the statements, not the WAL flush of each commit on a disk other work shares.
    await admin.execute(f'alter database "{DB}" set synchronous_commit = off')
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
        sent = [0]
        backends: dict[int, psutil.Process] = {}

        def server_cpu() -> float:
            """CPU seconds the store's backends serving this script used (robust to a busy machine)."""
            total = 0.0
            for proc in backends.values():
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            return total

        def count(_record) -> None:
            sent[0] += 1

        for rnd in range(rounds + 2):
            at = t0 + timedelta(minutes=rnd)

            async def one(ref: InstanceRef, rnd: int = rnd, at: datetime = at) -> None:
                async with sem, store.raw() as conn:
                    if (pid := conn.get_server_pid()) not in backends:
                        backends[pid] = psutil.Process(pid)
                    conn.add_query_logger(count)
                    try:
                        await recorder.write_runs(conn, ref, runs_for(ref.id, rnd, at))
                    finally:
                        conn.remove_query_logger(count)

            wall, cpu, server = time.perf_counter(), time.process_time(), server_cpu()
            sent[0] = 0
            await asyncio.gather(*(one(r) for r in refs))
            out.append((time.perf_counter() - wall, time.process_time() - cpu, server_cpu() - server))
        per_instance = round(sent[0] / n, 2)  # of the last round (steady)
        steady = out[2:]
        return {"instances": n, "rounds": rounds, "concurrency": concurrency,
                "wall_s": [round(x[0], 3) for x in steady], "cpu_s": [round(x[1], 3) for x in steady],
                "median_wall_s": round(statistics.median(x[0] for x in steady), 3),
                "median_cpu_s": round(statistics.median(x[1] for x in steady), 3),
                "median_server_cpu_s": round(statistics.median(x[2] for x in steady), 3),
                "statements_per_instance": per_instance}
    finally:
        await store.dispose()
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--as-transaction", action="store_true")
    a = p.parse_args()
    if a.as_transaction:
        run_record.record_runs = functools.partial(findings.record_runs, as_transaction=True)
    print(json.dumps(asyncio.run(main(a.instances, a.rounds, a.concurrency))))
