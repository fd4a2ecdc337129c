"""Benchmark (not a test): server time of the console's fleet overview and findings pages.

Plants a fleet of --instances instances and --findings findings (with three collector runs per
instance) straight into a throwaway store with SQL, starts a real `dbfleet serve`, signs in through
the form, then has --clients concurrent clients each fetch a page --requests times. Prints p50/p99
latency per page (loopback, so the figure is the server's time plus queueing in its one process);
--doc also writes it under "## Console" in docs/benchmarks.md. The issue's target: 5,000
instances, 1 M findings, 20 clients, p99 <= 150 ms.

    .venv/bin/python bench/console.py [--instances 5000] [--findings 1000000] [--clients 20] [--requests 25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import fresh_store, machine, now_utc, update_doc  # noqa: E402

from app.auth import Role, create_key  # noqa: E402

STORE = "postgresql://postgres@127.0.0.1:5432/dbf_bench_console"
CHECKS = ["unused_index", "duplicate_index", "fk_without_index", "missing_index", "table_bloat", "slow_query",
          "connections_near_limit", "replication_lag", "missing_future_partitions", "sequence_exhaustion"]

_PLANT = """
insert into instances (name, engine, host, port, dbname, "user", tls_mode, tags, cloud)
select format('db-%s', lpad(i::text, 5, '0')), (array['postgres','mysql','sqlserver','oracle'])[1 + i % 4],
       format('10.0.%s.%s', i / 250, i % 250), 5432, 'app', 'monitor', 'prefer',
       jsonb_build_object('env', (array['prod','staging','dev'])[1 + i % 3], 'team', format('team-%s', i % 40)),
       case i % 3 when 0 then '{}'::jsonb
            else jsonb_build_object('provider', (array['aws','azure'])[i % 3],
                                    'region', (array['eu-west-1','us-east-1','westeurope'])[1 + i % 5 % 3]) end
from generate_series(1, $1) i;

insert into collector_runs (instance_id, collector, started_at, duration_ms, status, findings)
select i.id, c, now() - (k * interval '1 minute'), 5, case when i.id % 50 = 0 then 'error' else 'ok' end, 0
from instances i, unnest(array['health','index_advice','query_stats']) c, generate_series(0, 2) k;

insert into findings (fingerprint, instance_id, collector, "check", object, severity, state, title, details,
                      recommendation, first_seen, last_seen, opened_at)
select md5(n::text), 1 + n % $1, 'index_advice', ($3::text[])[1 + n % 10], format('public.t%s', n),
       (array['info','warning','critical'])[1 + (n / 7) % 3],
       case when n % 20 = 0 then 'acknowledged' when n % 33 = 0 then 'resolved' else 'open' end,
       format('finding %s', n), '{}'::jsonb, 'DROP INDEX CONCURRENTLY x;',
       -- 97 s of last_seen, coprime with the state and severity cycles: the newest findings are not
       -- all acknowledged (n % 100 made every finding of the newest second n % 20 = 0).
       now() - (n % 1000) * interval '1 minute', now() - (n % 97) * interval '1 second', now()
from generate_series(1, $2) n;
analyze instances; analyze findings; analyze collector_runs;
"""


async def plant(url: str, instances: int, findings: int) -> str:
    store = await fresh_store(url)
    async with store.raw() as conn:
        for statement in _PLANT.split(";\n"):
            if statement.strip():
                args = [a for a, used in ((instances, "$1" in statement), (findings, "$2" in statement),
                                          (CHECKS, "$3" in statement)) if used]
                await conn.execute(statement, *args)
    async with store.sessions() as session, session.begin():
        key = await create_key(session, "bench-console", Role.viewer)
    await store.dispose()
    return key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(base: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise SystemExit("dbfleet serve did not start in 60 s")


async def measure(base: str, cookie: str, path: str, clients: int, requests: int) -> list[float]:
    latencies: list[float] = []

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=base, cookies={"dbfleet_session": cookie}, timeout=60) as c:
            for _ in range(requests):
                t0 = time.perf_counter()
                r = await c.get(path)
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"{path}: {r.status_code} {r.text[:200]}")

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def main(args: argparse.Namespace) -> None:
    url = os.environ.get("DBFLEET_DATABASE_URL", STORE)
    t0 = time.perf_counter()
    key = await plant(url, args.instances, args.findings)
    print(f"planted {args.instances} instances, {args.findings} findings in {time.perf_counter() - t0:.1f} s")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "dbfleet"), "serve", "--host", "127.0.0.1",
                               "--port", str(port)], env={**os.environ, "DBFLEET_DATABASE_URL": url},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_ready(base)
        async with httpx.AsyncClient(base_url=base) as c:
            cookie = (await c.post("/signin", data={"key": key})).cookies["dbfleet_session"]
        rows = []
        for path in ("/", "/?engine=postgres&tag=env%3Dprod&q=db-0", "/?cloud=aws&region=eu-west-1&team=team-7",
                     "/findings",
                     "/findings?severity=critical&state=open&sort=-last_seen"):
            await measure(base, cookie, path, 2, 3)  # warm the pool and the plans
            lat = await measure(base, cookie, path, args.clients, args.requests)
            rows.append(f"| `{path}` | {len(lat)} | {statistics.median(lat):.0f} | {pct(lat, 99):.0f} |")
            print(rows[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    if args.doc:
        body = (f"{now_utc()}, {machine()}. {args.instances} instances, {args.findings} findings, "
                f"{args.clients} concurrent clients, one `dbfleet serve` process.\n\n"
                "| page | requests | p50 ms | p99 ms |\n|---|---|---|---|\n" + "\n".join(rows))
        update_doc("## Console", "console-pages", body, "Made by `bench/console.py`.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--doc", action="store_true", help="write the table into docs/benchmarks.md")
    asyncio.run(main(parser.parse_args()))
