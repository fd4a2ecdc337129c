"""Retention with keep_table on the live MariaDB (127.0.0.1:3306): every expired row ends up in an
archive table, the parent loses the emptied partition, and nothing is dropped that still holds rows.

Each test works in its own database (dbf_keep_<random>), dropped afterwards.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import aiomysql
import pytest

from collectors.engines.base import Target, connect
from collectors.mysql import partition_apply, partition_plan, partitions
from collectors.spec import Context

RETENTION_DAYS = 90
TARGET = Target("keep", "mariadb", "127.0.0.1", 3306, user="root")


def _month(d: date, delta: int) -> date:
    m = d.month - 1 + delta
    return date(d.year + m // 12, m % 12 + 1, 1)


def _layout() -> list[tuple[str, date]]:
    """Monthly TO_DAYS partitions from 8 months back to 2 ahead: (name, upper bound)."""
    today = date.today()
    return [(f"p{_month(today, k - 1):%Y%m}", _month(today, k)) for k in range(-7, 3)]


def _expired() -> list[str]:
    cutoff = date.today() - timedelta(days=RETENTION_DAYS)
    return [name for name, upper in _layout() if upper <= cutoff]


async def _sql(conn, sql: str) -> list[dict]:
    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(sql)
        return list(await cur.fetchall())


@pytest.fixture
async def keep_db():
    """dbf_keep_*.events: k + 2 rows in the k-th partition (so every partition holds rows), and pmax."""
    name = f"dbf_keep_{uuid.uuid4().hex[:8]}"
    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    parts = ", ".join(f"PARTITION {n} VALUES LESS THAN (TO_DAYS('{upper}'))" for n, upper in _layout())
    rows = ", ".join(f"({k * 100 + i}, '{_month(upper, -1) + timedelta(days=i)}', 'r{k}')"
                     for k, (_, upper) in enumerate(_layout()) for i in range(k + 2))
    try:
        for sql in (f"CREATE DATABASE `{name}`",
                    f"CREATE TABLE `{name}`.events (id INT NOT NULL, created DATE NOT NULL, note VARCHAR(20), "
                    f"PRIMARY KEY (id, created), KEY k_note (note)) "
                    f"PARTITION BY RANGE (TO_DAYS(created)) ({parts}, PARTITION pmax VALUES LESS THAN MAXVALUE)",
                    f"INSERT INTO `{name}`.events VALUES {rows}"):
            await _sql(conn, sql)
        yield name, conn
    finally:
        await _sql(conn, f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


async def _rows_per_partition(conn, db: str) -> dict[str, int]:
    # COUNT(*) per partition, not information_schema's TABLE_ROWS estimate.
    names = [r["PARTITION_NAME"] for r in await _sql(conn, (
        f"SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = '{db}' "
        "AND TABLE_NAME = 'events' ORDER BY PARTITION_ORDINAL_POSITION"))]
    return {n: (await _sql(conn, f"SELECT COUNT(*) AS n FROM `{db}`.events PARTITION (`{n}`)"))[0]["n"] for n in names}


async def _count(conn, db: str, table: str) -> int:
    return (await _sql(conn, f"SELECT COUNT(*) AS n FROM `{db}`.`{table}`"))[0]["n"]


async def _plan(db: str, keep: bool = True) -> list[partition_apply.PlannedStatement]:
    policies = [{"table": f"{db}.*", "premake": 2, "retention": f"{RETENTION_DAYS} days", "keep_table": keep}]
    conn = await connect(TARGET)  # the collector's read-only session: the plan only reads
    try:
        return await partition_apply.plan_live(conn, policies, datetime.now(timezone.utc), table=f"{db}.events")
    finally:
        await conn.close()


def _retention_actions(plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in plan:
        if s.action != "create_partitions":
            out.setdefault(s.partition, []).append(s.action)
    return out


async def test_keep_table_moves_every_expired_row_into_archive_tables(keep_db):
    db, conn = keep_db
    expired = _expired()
    assert len(expired) >= 3, "the layout must have partitions past retention"
    before = await _rows_per_partition(conn, db)
    plan = await _plan(db)
    # What a DBA reads in `dbfleet partitions plan`: no DROP of a partition before its EXCHANGE.
    assert _retention_actions(plan) == {p: ["create_archive", "unpartition_archive", "exchange_partition",
                                            "drop_emptied_partition"] for p in expired}
    sqls = [s.sql for s in plan]
    for i, sql in enumerate(sqls):
        if " DROP PARTITION " in sql:
            assert any(" EXCHANGE PARTITION " + sql.rsplit(" ", 1)[1] in s for s in sqls[:i]), sql

    outcomes = await partition_apply.apply(TARGET, plan)
    assert [(o.status, o.message) for o in outcomes if o.status != "ok"] == []
    after = await _rows_per_partition(conn, db)
    assert not set(expired) & set(after), "the parent no longer has the expired partitions"
    for p in expired:
        assert await _count(conn, db, f"events_{p}") == before[p] > 0
    archived = sum([await _count(conn, db, f"events_{p}") for p in expired])
    assert archived + await _count(conn, db, "events") == sum(before.values())
    assert await _plan(db) == [], "a second plan has nothing left to do"


async def test_an_archive_name_taken_by_a_table_with_rows_refuses_that_partition(keep_db):
    db, conn = keep_db
    oldest, *others = _expired()
    await _sql(conn, f"CREATE TABLE `{db}`.`events_{oldest}` (id INT PRIMARY KEY, what VARCHAR(20))")
    await _sql(conn, f"INSERT INTO `{db}`.`events_{oldest}` VALUES (1, 'not ours')")
    before = await _rows_per_partition(conn, db)
    plan = await _plan(db)
    assert oldest not in _retention_actions(plan) and set(_retention_actions(plan)) == set(others)
    assert {o.status for o in await partition_apply.apply(TARGET, plan)} == {"ok"}
    assert (await _rows_per_partition(conn, db))[oldest] == before[oldest]
    assert await _sql(conn, f"SELECT * FROM `{db}`.`events_{oldest}`") == [{"id": 1, "what": "not ours"}]

    # The collector says why that partition stays (read-only session, same policy shape).
    ro = await connect(TARGET)
    try:
        thresholds = {**partitions.THRESHOLDS, "partition_policies": [
            {"table": f"{db}.*", "retention": f"{RETENTION_DAYS} days", "keep_table": True}]}
        result = await partitions.run(ro, Context(instance="keep", engine="mariadb", thresholds=thresholds,
                                                  now=datetime.now(timezone.utc)))
    finally:
        await ro.close()
    [due] = [f for f in result.findings if f.check == "partition_retention_due" and f.object == f"{db}.events"]
    assert due.details["refused"][oldest].startswith(f"{db}.events_{oldest} already exists and holds rows")


async def test_a_drop_is_refused_while_the_partition_still_holds_rows(keep_db):
    db, conn = keep_db
    oldest = _expired()[0]
    plan = await _plan(db)
    drop = next(s for s in plan if s.action == "drop_emptied_partition" and s.partition == oldest)
    # Run the DROP on its own (as if the EXCHANGE before it had been lost): it must not run.
    [outcome] = await partition_apply.apply(TARGET, [drop])
    assert outcome.status == "failed" and "still holds rows" in outcome.message
    forged = replace(drop, action="drop_partition")  # a plain DROP is never in a keep_table plan
    assert [o.status for o in await partition_apply.apply(TARGET, [forged])] == ["skipped"]
    assert oldest in await _rows_per_partition(conn, db)


async def test_the_single_table_apply_keeps_the_rows_too(keep_db):
    db, conn = keep_db
    total = sum((await _rows_per_partition(conn, db)).values())
    writer = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        policy = partition_plan.Policy(premake=2, retention_days=RETENTION_DAYS, keep_table=True)
        outcomes = await partition_plan.apply(writer, db, "events", policy)
        assert outcomes and all(o.status == "ok" for o in outcomes)
        assert await partition_plan.apply(writer, db, "events", policy) == []
    finally:
        writer.close()
    archived = sum([await _count(conn, db, f"events_{p}") for p in _expired()])
    assert archived + await _count(conn, db, "events") == total


async def test_keep_table_false_still_drops(keep_db):
    db, conn = keep_db
    before = await _rows_per_partition(conn, db)
    plan = await _plan(db, keep=False)
    assert _retention_actions(plan) == {p: ["drop_partition"] for p in _expired()}
    assert {o.status for o in await partition_apply.apply(TARGET, plan)} == {"ok"}
    assert await _count(conn, db, "events") == sum(n for p, n in before.items() if p not in _expired())
    tables = await _sql(conn, f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'")
    assert tables == [{"TABLE_NAME": "events"}]
