"""The MariaDB half of bench/overhead.py: dbfleet's share of a MariaDB server's statement time.

A throwaway MariaDB with performance_schema=ON (tests/collectors/mysql/servers.py starts it: temp
datadir, free loopback port), S schemas each with a 100k-row accounts table, one paced TPC-B-like
client per schema as `app`, and the same `dbfleet worker` monitoring every schema as `dbfleet`: the
activity and wait sampling collectors (and the rest) at their default intervals. The share comes
from performance_schema.events_statements_summary_by_user_by_event_name, diffed over the run; the
activity and waits collectors' own time from the statement digests only their SQL has.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field

import aiomysql
from common import REPO

sys.path.insert(0, str(REPO))  # the throwaway-server helper the MySQL integration tests use
from tests.collectors.mysql.servers import MariaDB, start_mariadb, stop_mariadb

ACCOUNTS = 100_000
SCHEMA_SQL = [
    "CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84)) ENGINE=InnoDB",
    f"INSERT INTO accounts SELECT seq, seq % 10, 0, '' FROM seq_1_to_{ACCOUNTS}",
    "CREATE TABLE history (aid int, delta int, mtime datetime) ENGINE=InnoDB",
]
# The harness reads as root; only app's and dbfleet's statements are compared.
BY_USER = """
SELECT USER AS user, SUM(COUNT_STAR) AS calls, SUM(SUM_TIMER_WAIT) / 1e9 AS ms
FROM performance_schema.events_statements_summary_by_user_by_event_name
WHERE USER IN ('app', 'dbfleet') GROUP BY USER
"""
# Statements only one collector sends (the harness's own reads of the digest table are left out).
COLLECTOR_DIGESTS = {"activity": "%INNODB_TRX%", "waits": "%events_waits_summary_global_by_event_name%"}
BY_DIGEST = """
SELECT SUM(COUNT_STAR) AS calls, COALESCE(SUM(SUM_TIMER_WAIT), 0) / 1e9 AS ms
FROM performance_schema.events_statements_summary_by_digest
WHERE DIGEST_TEXT LIKE %s AND DIGEST_TEXT NOT LIKE '%%events_statements_summary%%'
"""
REPORT_SQL = "SELECT bid, COUNT(*), SUM(abalance) FROM accounts GROUP BY bid"


@dataclass
class MariaDBFleet:
    server: MariaDB
    schemas: list[str]
    entries: list[dict] = field(default_factory=list)


def start(n_schemas: int) -> MariaDBFleet:
    server = start_mariadb("overhead", 1)  # its own temp dir: the mysql OS user must reach it
    schemas = [f"dbf_bench_ovh_my_{i:02d}" for i in range(n_schemas)]
    server.execute("CREATE USER 'app'@'127.0.0.1'", "CREATE USER 'dbfleet'@'127.0.0.1'",
                   "GRANT SELECT, PROCESS, REPLICATION CLIENT, SHOW VIEW ON *.* TO 'dbfleet'@'127.0.0.1'")
    for schema in schemas:
        server.execute(f"CREATE DATABASE {schema}", f"GRANT ALL ON {schema}.* TO 'app'@'127.0.0.1'",
                       *[f"USE {schema}", *SCHEMA_SQL])
    entries = [{"name": s.replace("_", "-"), "engine": "mariadb", "host": "127.0.0.1", "port": server.port,
                "dbname": s, "user": "dbfleet", "tls_mode": "disable", "tags": {"fleet": "overhead"}}
               for s in schemas]
    return MariaDBFleet(server, schemas, entries)


def stop(fleet: MariaDBFleet | None) -> None:
    if fleet is not None:
        stop_mariadb(fleet.server)


async def workload(port: int, schema: str, rate: float, seconds: float) -> int:
    """One client at `rate` transactions per second: 9 in 10 TPC-B-like, 1 in 10 the report."""
    conn = await aiomysql.connect(host="127.0.0.1", port=port, user="app", db=schema, autocommit=True)
    done, due, end = 0, time.monotonic(), time.monotonic() + seconds
    try:
        async with conn.cursor() as cur:
            while time.monotonic() < end:
                done += 1
                if done % 10 == 0:
                    await cur.execute(REPORT_SQL)
                    await cur.fetchall()
                else:
                    aid, delta = random.randint(1, ACCOUNTS), random.randint(-5000, 5000)
                    await cur.execute("START TRANSACTION")
                    await cur.execute("UPDATE accounts SET abalance = abalance + %s WHERE aid = %s", (delta, aid))
                    await cur.execute("SELECT abalance FROM accounts WHERE aid = %s", (aid,))
                    await cur.execute("INSERT INTO history VALUES (%s, %s, NOW())", (aid, delta))
                    await cur.execute("COMMIT")
                due += 1 / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        conn.close()
    return done


async def snapshot(port: int) -> dict[str, tuple[int, float]]:
    conn = await aiomysql.connect(host="127.0.0.1", port=port, user="root", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(BY_USER)
            out = {user: (int(calls), float(ms)) for user, calls, ms in await cur.fetchall()}
            for collector, pattern in COLLECTOR_DIGESTS.items():
                await cur.execute(BY_DIGEST, (pattern,))
                calls, ms = await cur.fetchone()
                out[f"dbfleet:{collector}"] = (int(calls or 0), float(ms or 0))
        return out
    finally:
        conn.close()


def summarise(before: dict, after: dict, wait_points: int) -> dict:
    d = {k: (after[k][0] - before.get(k, (0, 0.0))[0], after[k][1] - before.get(k, (0, 0.0))[1]) for k in after}
    fleet, app = d.get("dbfleet", (0, 0.0)), d.get("app", (0, 0.0))
    total = fleet[1] + app[1]
    return {"dbfleet_calls": fleet[0], "dbfleet_ms": round(fleet[1], 1), "workload_calls": app[0],
            "workload_ms": round(app[1], 1), "share_pct": round(100 * fleet[1] / total, 3) if total else None,
            **{c: {"calls": d.get(f"dbfleet:{c}", (0, 0))[0], "ms": round(d.get(f"dbfleet:{c}", (0, 0.0))[1], 1)}
               for c in COLLECTOR_DIGESTS}, "wait_points_stored": wait_points}
