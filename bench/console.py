"""Benchmark (not a test): server time of the console's fleet overview and findings pages.

Plants a fleet of --instances instances and --findings findings (with three collector runs per
instance) straight into a throwaway store with SQL, starts a real `dbfleet serve --workers N` for
each N of --workers, signs in through the form, then has wrk hold --clients connections on each
page for --seconds. Prints p50/p99 latency per page (loopback, so the figure is the server's time
plus queueing in its processes) and the CPU per request of dbfleet and of PostgreSQL; --doc also
writes it under "## Console" in docs/benchmarks.md. The issue's target: 5,000 instances, 1 M
findings, 20 clients, p99 <= 150 ms. Needs wrk (apt-get install wrk).

    .venv/bin/python bench/console.py [--instances 5000] [--findings 1000000] [--clients 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            async with httpx.AsyncClient() as client:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("dbfleet serve did not start in 60 s")


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def store_backends(database: str) -> list[psutil.Process]:
    """The PostgreSQL backends connected to the store (their process title names the database)."""
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and f" {database} " in " ".join(p.info["cmdline"] or [])]


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNIT_MS[unit]


def wrk(base: str, cookie: str, path: str, clients: int, seconds: int) -> dict:
    """`clients` connections, each sending its next request as soon as the last one is answered, for
    `seconds`: wrk's latency percentiles and request count. wrk is C: the load costs the 2 cores a
    few percent, where a Python client took a sixth of the machine."""
    out = subprocess.run(["wrk", f"-t{min(2, clients)}", f"-c{clients}", f"-d{seconds}s", "--latency",
                          "-H", f"Cookie: dbfleet_session={cookie}", base + path],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{path}: answers other than 200 under load:\n{out}")
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if len(pct) != 2:
        raise SystemExit(f"{path}: no latency distribution in wrk's output:\n{out}")
    return {"p50": _ms(pct["50"]), "p99": _ms(pct["99"]),
            "requests": int(re.search(r"^\s+(\d+) requests in", out, re.M).group(1))}


PAGES = ("/", "/?engine=postgres&tag=env%3Dprod&q=db-0", "/?cloud=aws&region=westeurope&team=team-7",
         "/findings", "/findings?severity=critical&state=open&sort=-last_seen")


def measure_workers(url: str, key: str, workers: int, args: argparse.Namespace) -> list[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "dbfleet"), "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", str(workers)],
                              env={**os.environ, "DBFLEET_DATABASE_URL": url},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        asyncio.run(wait_ready(base))
        cookie = asyncio.run(sign_in(base, key))
        serving = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        for path in PAGES:
            wrk(base, cookie, path, args.clients, 3)  # warm the pools, the plans and the caches
            pg = store_backends(url.rsplit("/", 1)[1])
            cpu0, pg0 = cpu_seconds(serving), cpu_seconds(pg)
            r = wrk(base, cookie, path, args.clients, args.seconds)
            per = lambda t: (t * 1000 / r["requests"])
            rows.append(f"| `{path}` | {workers} | {r['requests']} | {r['p50']:.0f} | {r['p99']:.0f} | "
                        f"{per(cpu_seconds(serving) - cpu0):.1f} | {per(cpu_seconds(pg) - pg0):.1f} |")
            print(rows[-1], flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


async def sign_in(base: str, key: str) -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        return (await c.post("/signin", data={"key": key})).cookies["dbfleet_session"]


def main(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/console.py needs wrk: apt-get install wrk")
    url = os.environ.get("DBFLEET_DATABASE_URL", STORE)
    t0 = time.perf_counter()
    key = asyncio.run(plant(url, args.instances, args.findings))
    print(f"planted {args.instances} instances, {args.findings} findings in {time.perf_counter() - t0:.1f} s")
    rows = [row for workers in args.workers for row in measure_workers(url, key, workers, args)]
    if args.doc:
        body = (f"{now_utc()}, {machine()}. {args.instances} instances, {args.findings} findings, "
                f"{args.clients} concurrent connections from wrk (each sends its next request when the last "
                f"is answered), {args.seconds} s per page, after 3 s of warm-up. CPU per request is the "
                "`dbfleet serve` processes' and the store's PostgreSQL backends' over the run, divided by the "
                "requests.\n\n"
                "| page | serve processes | requests | p50 ms | p99 ms | serve CPU ms/request | "
                "store CPU ms/request |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))
        update_doc("## Console", "console-pages", body, "Made by `bench/console.py`.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=20, help="of load per page")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="`dbfleet serve --workers` values to measure, in turn")
    parser.add_argument("--doc", action="store_true", help="write the table into docs/benchmarks.md")
    main(parser.parse_args())
