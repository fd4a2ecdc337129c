"""`dbfleet demo`: an embedded store, a small demo fleet with planted problems, one sweep, then
the API and the worker in one process until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import asyncpg
import uvicorn
from rich.console import Console

from app.db import Store, embedded_running, migrate, plain_url, resolve_store_url, stop_embedded
from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.settings import Settings

console = Console()
log = logging.getLogger(__name__)

# Each demo database carries problems a DBA would want found.
DEMO_SCHEMA = """
create extension if not exists pg_stat_statements;
create table customers (id bigserial primary key, email text not null, region text not null);
create table orders (id bigserial primary key, customer_id bigint not null references customers(id),
                     status text not null, total numeric(12,2) not null, created_at timestamptz not null default now());
-- a duplicate index: the second is a left prefix of the first
create index orders_status_created_idx on orders (status, created_at);
create index orders_status_idx on orders (status);
-- an index nobody uses
create index customers_region_idx on customers (region);
-- orders.customer_id has a foreign key but no index: deletes on customers scan orders
insert into customers (email, region) select 'c' || g || '@example.com', (array['eu','us','apac'])[1 + g % 3]
  from generate_series(1, 20000) g;
insert into orders (customer_id, status, total, created_at)
  select 1 + (g * 7919) % 20000, (array['new','paid','shipped'])[1 + g % 3], (g % 500) + 0.99,
         now() - (g % 90) * interval '1 day'
  from generate_series(1, 60000) g;
-- a range-partitioned table with no partition ahead and rows landing in its default partition
create table events (id bigint not null, at timestamptz not null, kind text) partition by range (at);
create table events_default partition of events default;
insert into events select g, now() + interval '40 days', 'late' from generate_series(1, 100) g;
analyze;
"""

DEMO_DATABASES = ("demo_shop", "demo_billing")


class _DemoServer(uvicorn.Server):
    """Ctrl-C shuts the API down gracefully and then runs the demo's own cleanup.

    uvicorn re-raises the captured SIGINT after its shutdown; under asyncio.run that cancels the
    main task in the middle of the cleanup, which left the worker unstopped and the embedded
    PostgreSQL running after the demo had exited.
    """

    @contextlib.contextmanager
    def capture_signals(self):
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


async def _workload(conn: asyncpg.Connection) -> None:
    """A little traffic so pg_stat_statements and the scan counters have something to show."""
    for i in range(200):
        await conn.fetchval("select count(*) from orders where customer_id = $1", i * 97 % 20000 + 1)
    for _ in range(20):
        await conn.fetchval("select sum(total) from orders where status = 'paid' and created_at > now() - interval '7 days'")


async def _create_demo_databases(store_url: str) -> None:
    admin = await asyncpg.connect(plain_url(store_url))
    try:
        existing = {r[0] for r in await admin.fetch("select datname from pg_database")}
        for db in DEMO_DATABASES:
            if db in existing:
                continue
            await admin.execute(f'create database "{db}"')
            conn = await asyncpg.connect(plain_url(store_url).rsplit("/", 1)[0] + f"/{db}")
            try:
                await conn.execute(DEMO_SCHEMA)
                await _workload(conn)
            finally:
                await conn.close()
    finally:
        await admin.close()


def demo_fleet(store_url: str) -> list[InstanceIn]:
    host_port = plain_url(store_url).split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    # A fresh demo has minutes of statistics, not the week an unused-index verdict normally
    # needs, so the demo instances override that window (and the size floor) to show the check.
    fresh = {"index_advice": {"thresholds": {"unused_index_min_window_days": 0, "unused_index_min_bytes": 0}}}
    fleet = [InstanceIn(name=db.replace("_", "-"), engine="postgres", host=host, port=int(port), dbname=db,
                        user="postgres", tags={"env": "demo", "team": "dba"}, overrides=fresh)
             for db in DEMO_DATABASES]
    # One instance that is down, to show what an unreachable server looks like.
    fleet.append(InstanceIn(name="demo-offline", engine="postgres", host="127.0.0.1", port=1, dbname="postgres",
                            user="postgres", tags={"env": "demo", "team": "dba"}))
    return fleet


async def prepare_demo(settings: Settings, data_dir: Path) -> tuple[Store, str]:
    """Start or reuse the store, migrate it, create and register the demo fleet; return an admin key."""
    from app.auth import Role, create_key
    from app.scheduler import upkeep

    url = await resolve_store_url(settings.database_url, data_dir / "pg")
    console.print(f"store: PostgreSQL at {url.split('@')[-1]}")
    await asyncio.to_thread(migrate, url)
    store = Store(url, settings.store_pool_size())
    await upkeep(store, settings)
    await _create_demo_databases(url)
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, demo_fleet(url), actor="demo")
        key = await create_key(session, "demo-admin", Role.admin)
    return store, key


async def run_demo(settings: Settings, port: int, data_dir: Path) -> None:
    from app.cli import print_findings
    from app.findings import finding_json
    from app.main import create_app
    from app.models import Finding, Instance
    from app.scheduler import run_worker
    from app.sweep import Sweeper
    from sqlalchemy import select

    settings = settings.model_copy(update={"store": settings.store.model_copy(update={"embedded_dir": data_dir / "pg"})})
    # Stop the embedded server on the way out only if this run started it.
    started_here = settings.database_url is None and not embedded_running(data_dir / "pg")
    store, key = await prepare_demo(settings, data_dir)
    sweeper = Sweeper(store, settings)
    summary = await sweeper.sweep()
    await sweeper.close()
    async with store.sessions() as session:
        rows = (await session.execute(select(Finding, Instance.name).join(Instance)
                                      .where(Finding.state != "resolved").order_by(Instance.name, Finding.check))).all()
    print_findings([finding_json(f, name) for f, name in rows])
    console.print(f"sweep: {summary.instances} instances, {summary.ok} collector runs ok, {summary.failed} failed, "
                  f"{summary.wall_s:.2f}s")
    console.print(f"\nconsole: http://127.0.0.1:{port}/  (sign in with the key below)\n"
                  f"API: http://127.0.0.1:{port}/api/v1  (OpenAPI at /docs)\nadmin API key: [bold]{key}[/bold]\n"
                  f"try: curl -H 'Authorization: Bearer {key}' http://127.0.0.1:{port}/api/v1/findings\n"
                  "Ctrl-C to stop.")
    server = _DemoServer(uvicorn.Config(create_app(settings, store.url), host="127.0.0.1", port=port,
                                        log_level="warning"))
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(store, settings, stop, serve_metrics=False))
    try:
        await server.serve()
    finally:
        stop.set()
        await worker
        await store.dispose()
        if started_here:
            await asyncio.to_thread(stop_embedded, data_dir / "pg")
            console.print("embedded store stopped; its data stays in " + str(data_dir / "pg"))
