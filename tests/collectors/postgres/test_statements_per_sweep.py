"""How many statements a steady full PostgreSQL sweep sends to one instance (issue 14, item 3).

Counted by asyncpg's query logger on the collectors' own session, against a real PostgreSQL 15
with pg_stat_statements and hypopg and the bench fleet's planted problems: every statement the
driver sends is counted, whichever collector sends it.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.pgsim.collect import Sweep, found
from collectors.engines import connect
from collectors.engines.base import Target

REPO = Path(__file__).resolve().parents[3]
DB = "dbf_ask14_statements"

# Per collector in a steady sweep: one statement each, but partitions reads each default partition
# on its own (a lock on one must fail only that table) and activity (sessions, then the xmin
# horizon) is another change's. Before issue 14 the same sweep sent 25.
STEADY = {"health": 1, "query_stats": 1, "index_advice": 1, "partitions": 2, "replication": 1, "activity": 2,
          "vacuum": 1, "wal_health": 1}
STEADY_TOTAL = 10


def fleet_schema() -> str:
    spec = importlib.util.spec_from_file_location("bench_fleet", REPO / "bench" / "fleet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SCHEMA


async def _planted(host: str, port: int) -> None:
    admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    await admin.execute(f"drop database if exists {DB} with (force)")
    await admin.execute(f"create database {DB}")
    await admin.close()
    app = await asyncpg.connect(host=host, port=port, user="postgres", database=DB)
    await app.execute(fleet_schema())
    for i in range(20):  # some statistics: index scans, sequential scans, an insert
        await app.fetch("select * from customers where id = $1", i + 1)
        await app.fetch("select count(*) from orders where status = $1", "open")
    await app.close()


async def _drop(host: str, port: int) -> None:
    admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    await admin.execute(f"drop database if exists {DB} with (force)")
    await admin.close()


class Counted:
    """Statements per collector, from asyncpg's query logger (everything the driver sends)."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.by: Counter[str] = Counter()
        self.current = ""
        raw.add_query_logger(lambda record: self.by.update([self.current]))

    def start(self, name: str) -> None:
        self.current = name

    def take(self) -> Counter[str]:
        out, self.by = self.by, Counter()
        return out


async def test_a_steady_full_sweep_sends_one_statement_per_collector(pg15_cluster):
    host, port = pg15_cluster.host, pg15_cluster.port
    await _planted(host, port)
    conn = await connect(Target("planted", "postgres", host, port, DB, "postgres"))
    try:
        counted, sweep = Counted(conn.raw), Sweep("planted")
        first = await sweep.run(conn, before_each=counted.start)
        cold = counted.take()
        for _ in range(3):  # warm-up: the texts of new statements (dbfleet's own among them) fetched once
            await sweep.run(conn, before_each=counted.start)
        counted.take()
        steady = await sweep.run(conn, before_each=counted.start)
        per_collector = counted.take()
        assert {k: v for k, v in per_collector.items() if k in STEADY} == STEADY, per_collector
        assert sum(per_collector.values()) <= STEADY_TOTAL
        assert sum(cold.values()) > sum(per_collector.values())  # the first run reads the definitions
        # What was cached and what was not read again stand: the same findings as the first run.
        assert found(steady) == found(first)
        assert any(check == "duplicate_index" for _, check, _, _ in found(steady))
        # A partitioned parent (events) has no storage and relfrozenxid 0: no XID age to report.
        assert not any(check == "table_xid_age" for _, check, _, _ in found(steady))

        # DDL moves the fingerprint: index_advice reads the definitions again, and sees the change.
        ddl = await asyncpg.connect(host=host, port=port, user="postgres", database=DB)
        await ddl.execute("create index customers_email_again_idx on customers (email)")
        await ddl.close()
        after_ddl = await sweep.run(conn, before_each=counted.start)
        assert counted.take()["index_advice"] == 2
        assert ("index_advice", "duplicate_index", "public.customers_email_again_idx", "warning") in found(after_ddl) \
            or ("index_advice", "duplicate_index", "public.customers_email_idx", "warning") in found(after_ddl)

        # The slow parts (bloat and sequences, hypopg) come back once their interval has passed.
        later = await sweep.run(conn, now=datetime.now(UTC) + timedelta(hours=7), before_each=counted.start)
        assert counted.take()["index_advice"] > 1
        assert found(later) >= {f for f in found(after_ddl) if f[0] == "index_advice"}
    finally:
        await conn.close()
        await _drop(host, port)

