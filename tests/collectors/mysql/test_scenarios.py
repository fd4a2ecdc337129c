"""Planted problems on real MariaDB servers (primary, lagging replica, stopped replica) yield exactly
the expected findings; a clean schema yields none. Also partition apply, end to end."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

import aiomysql
import pytest

from collectors.engines.base import Target, connect
from collectors.mysql import partition_plan
from collectors.registry import specs_for
from collectors.runner import run_collector
from collectors.spec import Context
from tests.collectors.spec_context import merged

pytestmark = pytest.mark.slow

THRESHOLDS = {"unused_index_min_uptime_days": 0, "premake": 2, "retention_days": 365,
              "full_scan_min_calls": 10, "full_scan_min_rows_examined": 10_000, "lag_warning_s": 2}


def _month(d: date, delta: int) -> date:
    m = d.month - 1 + delta
    return date(d.year + m // 12, m % 12 + 1, 1)


def _partition_ddl(func: str, months: range, columns: bool) -> str:
    today = date.today()
    parts = []
    for k in months:
        bound = _month(today, k)
        value = f"'{bound}'" if columns else f"TO_DAYS('{bound}')"
        parts.append(f"PARTITION p{_month(today, k - 1):%Y%m} VALUES LESS THAN ({value})")
    parts.append("PARTITION pmax VALUES LESS THAN " + ("(MAXVALUE)" if columns else "MAXVALUE"))
    return f"PARTITION BY {func} ({', '.join(parts)})"


def plant(primary) -> None:
    today = date.today()
    primary.execute(
        "CREATE DATABASE dbf_my_planted",
        "CREATE TABLE dbf_my_planted.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, status VARCHAR(10), "
        "created DATETIME, KEY k_customer (customer), KEY k_customer_created (customer, created), KEY k_status (status))",
        "INSERT INTO dbf_my_planted.orders (customer, status, created) "
        "SELECT seq % 100, IF(seq % 3, 'new', 'done'), NOW() - INTERVAL seq MINUTE FROM dbf_my_planted.seq_1_to_2000",
        "CREATE TABLE dbf_my_planted.audit_nopk (at DATETIME, msg VARCHAR(100))",
        "INSERT INTO dbf_my_planted.audit_nopk SELECT NOW(), 'x' FROM dbf_my_planted.seq_1_to_10",
        "CREATE TABLE dbf_my_planted.scan_me (id INT PRIMARY KEY, note VARCHAR(20))",
        "INSERT INTO dbf_my_planted.scan_me SELECT seq, CONCAT('n', seq) FROM dbf_my_planted.seq_1_to_3000",
        "CREATE TABLE dbf_my_planted.repl_probe (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
        # Monthly TO_DAYS partitions from 14 months ago up to the start of this month: nothing ahead,
        # this month's rows land in pmax, the oldest are past a 365-day retention.
        "CREATE TABLE dbf_my_planted.sales (id INT NOT NULL, created DATE NOT NULL, PRIMARY KEY (id, created)) "
        + _partition_ddl("RANGE (TO_DAYS(created))", range(-13, 1), columns=False),
        f"INSERT INTO dbf_my_planted.sales VALUES (1, '{today}'), (2, '{_month(today, -5)}'), (3, '{_month(today, -13)}')",
        "CREATE DATABASE dbf_my_clean",
        "CREATE TABLE dbf_my_clean.customers (id INT PRIMARY KEY, email VARCHAR(100), UNIQUE KEY uk_email (email))",
        "INSERT INTO dbf_my_clean.customers SELECT seq, CONCAT('c', seq, '@example.com') FROM dbf_my_clean.seq_1_to_100",
        "CREATE TABLE dbf_my_clean.daily (id INT NOT NULL, day DATE NOT NULL, PRIMARY KEY (id, day)) "
        + _partition_ddl("RANGE COLUMNS (day)", range(-2, 6), columns=True),
        f"INSERT INTO dbf_my_clean.daily VALUES (1, '{today}')",
    )
    with primary.connect(database="dbf_my_planted") as conn, conn.cursor() as cur:
        for _ in range(3):
            cur.execute("SELECT * FROM orders FORCE INDEX (k_customer_created) WHERE customer = 5 ORDER BY created")
            cur.execute("SELECT * FROM dbf_my_clean.customers WHERE id = 7")


def _wait(predicate, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)
    return value


def _status(replica) -> dict:
    return replica.execute("SHOW ALL REPLICAS STATUS")[0]


def _caught_up(replica, primary) -> bool:
    gtid = primary.execute("SELECT @@gtid_binlog_pos AS p")[0]["p"]
    return replica.execute("SELECT @@gtid_slave_pos AS p")[0]["p"] == gtid


async def _collect(server, name: str, *collectors: str, now: datetime | None = None, previous=None):
    conn = await connect(Target(name, "mariadb", "127.0.0.1", server.port, user="root"))
    try:
        out = {}
        for spec in specs_for("mariadb", conn.server_version):
            if spec.name in collectors:
                ctx = Context(instance=name, engine="mariadb", thresholds=merged(spec, THRESHOLDS),
                              now=now or datetime.now(timezone.utc), previous=(previous or {}).get(spec.name))
                out[spec.name] = await run_collector(spec, conn, ctx)
        return out
    finally:
        await conn.close()


def _findings(results, prefix: str = "") -> set[tuple[str, str, str]]:
    return {(f.check, f.object, f.severity.value) for r in results.values() for f in r.findings
            if f.object.startswith(prefix)}


@pytest.fixture(scope="module")
def planted(mariadb_cluster):
    c = mariadb_cluster
    plant(c.primary)
    for replica in (c.lagging, c.stopped):
        _wait(lambda: _caught_up(replica, c.primary), "replicas to catch up")
    return c


async def test_planted_problems_yield_exactly_their_findings(planted):
    c = planted
    source = f"127.0.0.1:{c.primary.port}"
    t0 = datetime.now(timezone.utc)
    first = await _collect(c.primary, "primary", "query_stats", now=t0)
    with c.primary.connect(database="dbf_my_planted") as conn, conn.cursor() as cur:
        for _ in range(20):
            cur.execute("SELECT COUNT(*) FROM scan_me WHERE note = 'needle'")
    scan_digest = c.primary.execute(
        "SELECT DIGEST FROM performance_schema.events_statements_summary_by_digest "
        "WHERE SCHEMA_NAME = 'dbf_my_planted' AND DIGEST_TEXT LIKE '%scan_me%'")[0]["DIGEST"]
    primary = await _collect(c.primary, "primary", "query_stats", "index_advice", "partitions", "replication",
                             now=t0 + timedelta(seconds=300), previous={"query_stats": first["query_stats"].state})

    c.stopped.execute("STOP SLAVE SQL_THREAD")
    stopped = await _collect(c.stopped, "stopped", "replication")
    lagging = await _lagging_replica_findings(c)

    found = _findings(primary, "dbf_my_planted") | _findings(stopped) | lagging
    assert found == {
        ("unused_index", "dbf_my_planted.orders.k_status", "info"),
        ("duplicate_index", "dbf_my_planted.orders.k_customer", "warning"),
        ("table_without_primary_key", "dbf_my_planted.audit_nopk", "warning"),
        ("full_scan_query", f"dbf_my_planted/{scan_digest}", "warning"),
        ("missing_future_partitions", "dbf_my_planted.sales", "warning"),
        ("catchall_partition_rows", "dbf_my_planted.sales", "warning"),
        ("partition_retention_due", "dbf_my_planted.sales", "info"),
        ("replication_lag", source, "warning"),
        ("replication_stopped", source, "critical"),
    }
    assert _findings(primary, "dbf_my_clean") == set()
    assert primary["replication"].findings == []  # a primary has no replica status


async def _lagging_replica_findings(c) -> set:
    """Hold a table lock on the delayed replica so the applier waits beyond its 1 s MASTER_DELAY."""
    lock = c.lagging.connect()
    try:
        lock.cursor().execute("LOCK TABLES dbf_my_planted.repl_probe WRITE")
        c.primary.execute("INSERT INTO dbf_my_planted.repl_probe (v) VALUES (1)")
        _wait(lambda: (_status(c.lagging)["Seconds_Behind_Master"] or 0) - _status(c.lagging)["SQL_Delay"] >= 3,
              "the replica to fall 3 s behind beyond its delay")
        return _findings(await _collect(c.lagging, "lagging", "replication"))
    finally:
        lock.cursor().execute("UNLOCK TABLES")
        lock.close()


async def test_delayed_replica_in_sync_and_read_only_replica_are_clean(planted):
    c = planted
    c.primary.execute("INSERT INTO dbf_my_planted.repl_probe (v) VALUES (2)")
    _wait(lambda: _caught_up(c.lagging, c.primary), "the delayed replica to apply")
    results = await _collect(c.lagging, "lagging", "replication", "health")
    assert _findings(results) == set()
    assert results["replication"].samples[0].metric == "replication_lag_seconds"


async def test_adapter_session_on_performance_schema_server(planted):
    conn = await connect(Target("primary", "mariadb", "127.0.0.1", planted.primary.port, user="root"))
    replica = await connect(Target("lagging", "mariadb", "127.0.0.1", planted.lagging.port, user="root"))
    try:
        [row] = await conn.fetch("SELECT ATTR_VALUE AS v FROM performance_schema.session_connect_attrs "
                                 "WHERE ATTR_NAME = 'program_name' AND PROCESSLIST_ID = CONNECTION_ID()")
        assert row["v"] == "dbfleet"
        assert (conn.is_standby, replica.is_standby) == (False, True)
    finally:
        await conn.close()
        await replica.close()


async def test_partition_apply_fixes_the_table_and_is_idempotent(planted):
    writer = await aiomysql.connect(host="127.0.0.1", port=planted.primary.port, user="root", autocommit=True)
    try:
        policy = partition_plan.Policy(premake=2, retention_days=365)
        outcomes = await partition_plan.apply(writer, "dbf_my_planted", "sales", policy)
        assert outcomes and all(o.status == "ok" for o in outcomes)
        assert [o.sql.split(" PARTITION")[0] for o in outcomes][0].endswith("REORGANIZE")
        assert await partition_plan.apply(writer, "dbf_my_planted", "sales", policy) == []
        for bad in ("orders", "no_such_table", "sales`; DROP TABLE orders; --"):
            with pytest.raises(partition_plan.NotRangePartitioned):
                await partition_plan.apply(writer, "dbf_my_planted", bad, policy)
    finally:
        writer.close()
    after = await _collect(planted.primary, "primary", "partitions")
    assert _findings(after, "dbf_my_planted") == set()
    rows = planted.primary.execute("SELECT COUNT(*) AS n FROM dbf_my_planted.sales")
    assert rows[0]["n"] == 2  # the row past retention went with its partition; the others moved out of pmax


async def test_app_facing_plan_and_apply_replans_and_refuses_forgeries(planted):
    from dataclasses import replace

    from collectors.mysql import partition_apply

    today = date.today()
    days = ", ".join(f"PARTITION p{today - timedelta(days=k + 1):%Y%m%d} VALUES LESS THAN ('{today - timedelta(days=k)}')"
                     for k in range(6, -1, -1))
    planted.primary.execute(
        "CREATE DATABASE dbf_my_apply",
        f"CREATE TABLE dbf_my_apply.visits (id INT NOT NULL, day DATE NOT NULL, PRIMARY KEY (id, day)) "
        f"PARTITION BY RANGE COLUMNS (day) ({days})",
        "CREATE TABLE dbf_my_apply.plain (id INT PRIMARY KEY)")
    target = Target("primary", "mariadb", "127.0.0.1", planted.primary.port, user="root")
    policies = [{"table": "dbf_my_apply.*", "premake": 2, "retention_days": 3}]
    conn = await connect(target)
    try:
        everywhere = await partition_apply.plan_live(conn, policies, datetime.now(timezone.utc))
        statements = [s for s in everywhere if s.schema == "dbf_my_apply"]
        assert statements == await partition_apply.plan_live(conn, policies, datetime.now(timezone.utc),
                                                             table="dbf_my_apply.visits")
        # Bounds end today-6 .. today: those ending on or before today-3 are past a 3-day retention.
        assert [s.action for s in statements] == ["create_partitions"] + ["drop_partition"] * 4
        assert statements[0].sql.startswith("ALTER TABLE `dbf_my_apply`.`visits` ADD PARTITION (PARTITION `p")
        with pytest.raises(partition_plan.NotRangePartitioned):
            await partition_apply.plan_live(conn, policies, datetime.now(timezone.utc), table="dbf_my_apply.plain")
    finally:
        await conn.close()
    outcomes = await partition_apply.apply(target, statements)
    assert [o.status for o in outcomes] == ["ok"] * 5
    assert {o.status for o in await partition_apply.apply(target, statements)} == {"skipped"}
    forged = [replace(statements[1], sql="DROP TABLE `dbf_my_apply`.`plain`"),
              replace(statements[1], table_name="plain", sql="DROP TABLE `dbf_my_apply`.`plain`")]
    assert [o.status for o in await partition_apply.apply(target, forged)] == ["skipped", "failed"]
    assert planted.primary.execute("SHOW TABLES FROM dbf_my_apply") == [{"Tables_in_dbf_my_apply": "plain"},
                                                                       {"Tables_in_dbf_my_apply": "visits"}]
