"""A simulated PostgreSQL fleet on this machine: `up --instances N [--clusters K]`, `status`, `down`.

K throwaway PostgreSQL 15 clusters (initdb into a temp dir, run as the postgres OS user, free
loopback ports, fsync/synchronous_commit/full_page_writes off, pg_stat_statements preloaded)
hold N-2 databases copied from one template database with a realistic schema and planted
problems; each database then gets a little workload of its own (scan statistics are per
database and are not copied from the template). A primary/standby pair makes the last two
instances. Every instance is registered as the login role `dbfleet` (pg_monitor +
pg_read_all_data) so its statements are attributable in pg_stat_statements.

The inventory YAML is for `dbfleet inventory import`; `--repeat R` also writes one listing each database R times
(R inventory entries, R held-open sessions) to simulate R x N instances on the same servers.
State lives in <root>/state.json so `down` stops every server by its data directory and removes
the files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import yaml

BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
DEFAULT_ROOT = Path("/tmp/dbf_bench_fleet")
TEMPLATE = "dbf_bench_template"
STANDBY_NAME = "dbf_bench_standby"

# Planted problems: a duplicate index, an unused index, an unindexed FK, a range-partitioned
# table with no partition ahead of this month and rows in its default partition.
SCHEMA = """
create extension if not exists pg_stat_statements;
create extension if not exists hypopg;
create table customers (id bigserial primary key, email text not null, name text, region text,
                        created_at timestamptz not null default now());
create index customers_email_idx on customers (email);
create index customers_email_dup_idx on customers (email);
create index customers_region_idx on customers (region);
create table orders (id bigserial primary key, customer_id bigint not null references customers (id),
                     status text not null, amount numeric(12, 2), created_at timestamptz not null);
create table events (id bigint not null, created_at timestamptz not null, kind text, payload jsonb)
    partition by range (created_at);
do $$
declare m date := date_trunc('month', now())::date - interval '3 months';
begin
  for i in 0..3 loop
    execute format('create table %I partition of events for values from (%L) to (%L)',
                   'events_' || to_char(m, 'YYYY_MM'), m, (m + interval '1 month')::date);
    m := (m + interval '1 month')::date;
  end loop;
end $$;
create table events_default partition of events default;
insert into customers (email, name, region)
  select 'user' || g || '@example.com', 'User ' || g, (array['eu', 'us', 'apac'])[1 + g % 3]
  from generate_series(1, 2000) g;
insert into orders (customer_id, status, amount, created_at)
  select 1 + g % 2000, (array['open', 'paid', 'shipped'])[1 + g % 3], (g % 500) + 0.99,
         now() - (g % 90) * interval '1 day'
  from generate_series(1, 20000) g;
insert into events select g, now() - (g % 80) * interval '1 day', 'click', '{"a": 1}'
  from generate_series(1, 5000) g;
insert into events select g, now() + interval '45 days', 'future', '{}' from generate_series(1, 50) g;
analyze;
"""

# Run in every database after it is created, as postgres (not dbfleet): index scans on the
# primary key and the e-mail index, sequential scans of orders, an insert.
WORKLOAD = [
    ("select * from customers where id = $1", lambda i: (1 + i * 7 % 2000,)),
    ("select * from customers where email = $1", lambda i: (f"user{1 + i * 13 % 2000}@example.com",)),
    ("select count(*) from orders where status = $1", lambda i: (("open", "paid", "shipped")[i % 3],)),
    ("select sum(amount) from orders where customer_id = $1", lambda i: (1 + i % 2000,)),
    ("insert into events values ($1, now(), 'bench', '{}')", lambda i: (100_000 + i,)),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_as(cmd: list[str], timeout: int = 300) -> None:
    subprocess.run(cmd, check=True, user=OS_USER, capture_output=True, timeout=timeout)


def init_cluster(root: Path, name: str, max_connections: int, extra: dict[str, str] | None = None) -> dict:
    """initdb + postgresql.conf + start; returns the cluster's state entry."""
    base = root / name
    base.mkdir(parents=True)
    shutil.chown(base, OS_USER)
    data = base / "data"
    run_as([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
    port = free_port()
    conf = {
        "listen_addresses": "'127.0.0.1'", "port": str(port), "unix_socket_directories": f"'{base}'",
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        "shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.max": "20000",
        "max_connections": str(max_connections), "shared_buffers": "128MB",
        # Autovacuum visiting hundreds of databases a minute is noise on two cores.
        "autovacuum_naptime": "600", "checkpoint_timeout": "30min", "max_wal_size": "4GB",
        "log_min_messages": "warning", **(extra or {}),
    }
    with open(data / "postgresql.conf", "a") as f:
        f.writelines(f"{k} = {v}\n" for k, v in conf.items())
    start(data, base)
    return {"name": name, "base": str(base), "data": str(data), "port": port}


def start(data: Path, base: Path) -> None:
    run_as([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "120", "start"])


def stop(entry: dict) -> None:
    data = Path(entry["data"])
    if (data / "postmaster.pid").exists():
        try:
            run_as([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=120)
        except subprocess.CalledProcessError as e:
            print(f"stop {entry['name']}: {e.stderr.decode().strip()}", file=sys.stderr)
    shutil.rmtree(entry["base"], ignore_errors=True)


async def admin(port: int, db: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=db)


async def prepare_cluster(port: int) -> None:
    """The monitoring role and the template database with its schema."""
    conn = await admin(port)
    try:
        await conn.execute("create role dbfleet login in role pg_monitor, pg_read_all_data")
        await conn.execute(f"create database {TEMPLATE}")
    finally:
        await conn.close()
    conn = await admin(port, TEMPLATE)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


async def create_databases(port: int, names: list[str]) -> None:
    conn = await admin(port)
    try:
        for name in names:
            await conn.execute(f"create database {name} template {TEMPLATE} strategy file_copy")
    finally:
        await conn.close()


async def workload_once(port: int, db: str, seed: int) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=db,
                                 server_settings={"application_name": "bench-workload"})
    try:
        for i in range(4):
            for sql, args in WORKLOAD:
                await conn.execute(sql, *args(seed + i))
    finally:
        await conn.close()


async def run_workload(targets: list[tuple[int, str]], concurrency: int = 16) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, port: int, db: str) -> None:
        async with sem:
            await workload_once(port, db, i)

    await asyncio.gather(*(one(i, p, d) for i, (p, d) in enumerate(targets)))


def start_standby(primary: dict, root: Path) -> dict:
    """pg_basebackup -R -X stream -c fast -C -S slot, then start on its own port."""
    base = root / "standby"
    base.mkdir()
    shutil.chown(base, OS_USER)
    data = base / "data"
    run_as([str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary["port"]), "-U", "postgres",
            "-D", str(data), "-R", "-X", "stream", "-c", "fast", "-C", "-S", "dbf_bench_slot"])
    port = free_port()
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write(f"port = {port}\nunix_socket_directories = '{base}'\ncluster_name = '{STANDBY_NAME}'\n")
    start(data, base)
    return {"name": "standby", "base": str(base), "data": str(data), "port": port}


def inventory(fleet: list[tuple[str, int, str]], pair: tuple[dict, dict], repeat: int) -> list[dict]:
    items = []
    for r in range(repeat):
        suffix = f"-r{r}" if repeat > 1 else ""
        for cluster, port, db in fleet:
            items.append({"name": f"{db.replace('_', '-')}{suffix}", "engine": "postgres", "host": "127.0.0.1",
                          "port": port, "dbname": db, "user": "dbfleet", "tls_mode": "disable",
                          "tags": {"fleet": "bench", "pgcluster": cluster}})
    primary, standby = pair
    for entry, role in ((primary, "primary"), (standby, "standby")):
        # No role or peer tags: dbfleet reads the topology from the servers themselves.
        tags = {"fleet": "bench", "pgcluster": "repl"}
        items.append({"name": f"dbf-bench-{role}", "engine": "postgres", "host": "127.0.0.1",
                      "port": entry["port"], "dbname": "dbf_bench_repl", "user": "dbfleet", "tls_mode": "disable",
                      "tags": tags})
    return items


def up(args: argparse.Namespace) -> None:
    root: Path = args.root
    if (root / "state.json").exists():
        sys.exit(f"{root}/state.json exists: run `down` first")
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    shutil.chown(root, OS_USER)
    n_dbs = args.instances - 2
    per = -(-n_dbs // args.clusters)
    max_conn = per * (args.repeat + 1) + 40
    with ThreadPoolExecutor(args.clusters + 1) as pool:
        futures = [pool.submit(init_cluster, root, f"c{k}", max_conn) for k in range(args.clusters)]
        repl_f = pool.submit(init_cluster, root, "primary", 60, {"wal_level": "replica", "max_wal_senders": "5"})
        clusters = [f.result() for f in futures]
        primary = repl_f.result()
    state = {"root": str(root), "clusters": clusters + [primary], "inventory": str(args.inventory)}
    (root / "state.json").write_text(json.dumps(state, indent=2))
    print(f"{len(clusters) + 1} clusters started in {time.perf_counter() - t0:.1f}s", flush=True)
    fleet = [(c["name"], c["port"], f"dbf_bench_{i:04d}") for i, c in
             ((i, clusters[i // per]) for i in range(n_dbs))]
    asyncio.run(_populate(clusters, primary, fleet))
    print(f"{n_dbs} databases created and worked in {time.perf_counter() - t0:.1f}s", flush=True)
    standby = start_standby(primary, root)
    state["clusters"].append(standby)
    (root / "state.json").write_text(json.dumps(state, indent=2))
    args.inventory.parent.mkdir(parents=True, exist_ok=True)
    for repeat in sorted({1, args.repeat}):
        path = args.inventory if repeat == 1 else args.inventory.with_name(f"{args.inventory.stem}-x{repeat}.yaml")
        items = inventory(fleet, (primary, standby), repeat)
        path.write_text(yaml.safe_dump({"instances": items}, sort_keys=False))
        print(f"{len(items)} inventory entries in {path}")
    print(f"fleet up after {time.perf_counter() - t0:.1f}s")


async def _populate(clusters: list[dict], primary: dict, fleet: list[tuple[str, int, str]]) -> None:
    await asyncio.gather(*(prepare_cluster(c["port"]) for c in clusters + [primary]))
    by_port: dict[int, list[str]] = {}
    for _, port, db in fleet:
        by_port.setdefault(port, []).append(db)
    by_port.setdefault(primary["port"], []).append("dbf_bench_repl")
    await asyncio.gather(*(create_databases(port, names) for port, names in by_port.items()))
    await run_workload([(p, d) for _, p, d in fleet] + [(primary["port"], "dbf_bench_repl")])


def down(args: argparse.Namespace) -> None:
    path = args.root / "state.json"
    if not path.exists():
        sys.exit(f"no fleet at {args.root}")
    state = json.loads(path.read_text())
    for entry in reversed(state["clusters"]):
        stop(entry)
    shutil.rmtree(args.root, ignore_errors=True)
    print(f"fleet at {args.root} stopped and removed")


def status(args: argparse.Namespace) -> None:
    path = args.root / "state.json"
    print(path.read_text() if path.exists() else f"no fleet at {args.root}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--instances", type=int, default=500, help="inventory entries incl. the primary/standby pair")
    u.add_argument("--clusters", type=int, default=5)
    u.add_argument("--repeat", type=int, default=1, help="also write an inventory listing each database R times "
                   "(R sessions per database: simulated R x N instances); sizes max_connections")
    u.add_argument("--inventory", type=Path, default=DEFAULT_ROOT.with_name("dbf_bench_fleet.yaml"))
    sub.add_parser("down")
    sub.add_parser("status")
    args = p.parse_args(argv)
    {"up": up, "down": down, "status": status}[args.cmd](args)


if __name__ == "__main__":
    main()
