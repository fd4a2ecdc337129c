"""Partition maintenance: planner and findings on recorded rows; discovery, plan and apply on PG 15."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, time, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from collectors.engines.base import SessionLimits, Target, connect
from collectors.postgres.partition_apply import apply
from collectors.postgres.partition_plan import (
    DefaultPartition,
    PartitionPolicy,
    Step,
    add_step,
    infer_step,
    parse_interval,
    plan,
    quote_ident,
)
from collectors.postgres.partitions import (
    DISCOVER_SQL,
    NotPartitioned,
    discover,
    findings_for,
    plan_live,
    tables_from_rows,
)
from collectors.registry import specs_for
from collectors.runner import run_collector
from collectors.spec import Severity
from tests.collectors.spec_context import spec_context

FIXTURES = Path(__file__).parents[1] / "fixtures" / "postgres"
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def recorded_tables():
    rows = json.loads((FIXTURES / "partitions_discover_pg15.json").read_text())
    return {t.name: t for t in tables_from_rows(rows, server_version=150020)}


def test_recorded_rows_group_into_tables():
    tables = recorded_tables()
    assert set(tables) == {"events", "ids", 'Odd "name"', "empty_parent"}
    assert tables["events"].default.name == "events_default"
    assert len(tables["events"].partitions) == 3
    # Bounds printed in Europe/Paris still mean UTC midnight.
    assert tables["events"].partitions[-1].upper == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert tables["ids"].partitions[-1].lower is None  # MINVALUE (ordered last by the SQL)


@pytest.mark.parametrize("text, step", [
    ("1 month", Step(months=1)), ("monthly", Step(months=1)), ("3 months", Step(months=3)),
    ("1 year", Step(months=12)), ("7 days", Step(days=7)), ("1 week", Step(days=7)),
    ("daily", Step(days=1)), ("2 hours", Step(seconds=7200)), ("1000", Step(width=1000)), (500, Step(width=500)),
])
def test_parse_interval(text, step):
    assert parse_interval(text) == step


@pytest.mark.parametrize("bad", ["", "month", "0 days", "1 fortnight", "1; drop table x"])
def test_parse_interval_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        parse_interval(bad)


@pytest.mark.parametrize("name, step", [
    ("events", Step(months=1)), ('Odd "name"', Step(days=1)), ("ids", Step(width=1000)), ("empty_parent", None),
])
def test_infer_step_from_bounds(name, step):
    assert infer_step(recorded_tables()[name].partitions) == step


def test_add_month_clamps_to_month_end():
    assert add_step(datetime(2027, 1, 31), Step(months=1)) == datetime(2027, 2, 28)


# (table, policies, checks expected as (check, object, severity))
CASES = [
    ("events", [], {("missing_future_partitions", "public.events", Severity.warning)}),
    ("events", [PartitionPolicy(table="public.ev*", premake=0)], set()),
    ("events", [PartitionPolicy(table="public.events", retention="1 month", premake=0)],
     {("partition_retention_due", "public.events", Severity.info)}),
    # No default partition and nothing ahead: the next insert past the last bound fails.
    ("ids", [], {("missing_future_partitions", "public.ids", Severity.critical)}),
    ("empty_parent", [], set()),
]


@pytest.mark.parametrize("name, policies, expected", CASES)
def test_findings_on_recorded_rows(name, policies, expected):
    table = recorded_tables()[name]
    if name == "ids":
        table = replace(table, current_key=2500)
    result = findings_for([table], policies, NOW)
    assert {(f.check, f.object, f.severity) for f in result.findings} == expected


def test_default_rows_block_the_partition_that_covers_them():
    table = recorded_tables()["events"]
    table = replace(table, default=DefaultPartition("public", "events_default", 2,
                                                    datetime(2026, 12, 15, tzinfo=timezone.utc),
                                                    datetime(2026, 12, 20, tzinfo=timezone.utc)))
    result = findings_for([table], [], NOW)
    by_check = {f.check: f for f in result.findings}
    assert by_check["default_partition_rows"].object == "public.events_default"
    assert "pg_partman#510" in by_check["default_partition_rows"].recommendation
    assert by_check["default_partition_rows"].details["blocked_ranges"] == ["[2026-12-01 01:00:00+01:00, 2027-01-01 01:00:00+01:00)"]
    sqls = [s.sql for s in plan([table], [], NOW)]
    assert not any("2026-12-01 01:00:00+01:00') TO" in s for s in sqls)
    # Recorded with TimeZone Europe/Paris: the offset is kept, the instant is still UTC midnight.
    assert len(sqls) == 4 and "FROM ('2027-01-01 01:00:00+01:00') TO ('2027-02-01 01:00:00+01:00')" in sqls[0]


def test_plan_quotes_names_from_the_catalog():
    table = recorded_tables()['Odd "name"']
    sqls = [s.sql for s in plan([table], [PartitionPolicy(premake=2)], NOW)]
    assert sqls == [
        'CREATE TABLE "public"."Odd ""name""_p20261127" PARTITION OF "public"."Odd ""name""" '
        "FOR VALUES FROM ('2026-11-27') TO ('2026-11-28')",
        'CREATE TABLE "public"."Odd ""name""_p20261128" PARTITION OF "public"."Odd ""name""" '
        "FOR VALUES FROM ('2026-11-28') TO ('2026-11-29')",
    ]


@pytest.mark.parametrize("version, keep, expected", [
    (150020, False, ['ALTER TABLE "public"."ids" DETACH PARTITION "public"."ids_1" CONCURRENTLY',
                     'DROP TABLE "public"."ids_1"']),
    (150020, True, ['ALTER TABLE "public"."ids" DETACH PARTITION "public"."ids_1" CONCURRENTLY']),
    (130010, False, ['ALTER TABLE "public"."ids" DETACH PARTITION "public"."ids_1"', 'DROP TABLE "public"."ids_1"']),
])
def test_retention_detach_concurrently_only_where_allowed(version, keep, expected):
    table = replace(recorded_tables()["ids"], current_key=3500, server_version=version)
    policy = PartitionPolicy(table="public.*", premake=0, retention=1500, keep_table=keep)
    assert [s.sql for s in plan([table], [policy], NOW)] == expected


def test_partman_tables_are_reported_never_planned():
    table = replace(recorded_tables()["ids"], current_key=2500, partman_premake=4)
    assert plan([table], [], NOW) == []
    [finding] = findings_for([table], [], NOW).findings
    assert finding.details["managed_by"] == "pg_partman" and "run_maintenance" in finding.recommendation


def test_quote_ident_doubles_quotes():
    assert quote_ident('a"; drop table x; --') == '"a""; drop table x; --"'


def test_policy_validation_rejects_bad_interval():
    with pytest.raises(ValueError):
        PartitionPolicy.model_validate({"table": "*", "interval": "every tuesday"})


# --- against the real PostgreSQL 15 on 127.0.0.1:5432 ---

PLANTED = """
create table events (id bigint, created_at timestamptz not null) partition by range (created_at);
create table events_p2026_07 partition of events for values from ('2026-07-01 00:00+00') to ('2026-08-01 00:00+00');
create table events_p2026_10 partition of events for values from ('2026-10-01 00:00+00') to ('2026-11-01 00:00+00');
create table events_p2026_11 partition of events for values from ('2026-11-01 00:00+00') to ('2026-12-01 00:00+00');
create table events_default partition of events default;
insert into events values (1, '2026-12-03 10:00+00'), (2, '2026-12-09 08:00+00');
create table metrics (ts timestamptz not null, v float8) partition by range (ts);
create table metrics_p2026_06 partition of metrics for values from ('2026-06-01 00:00+00') to ('2026-07-01 00:00+00');
"""
CLEAN = """
create table metrics (ts timestamptz not null, v float8) partition by range (ts);
""" + "\n".join(
    f"create table metrics_{m} partition of metrics for values from ('{y}-{m:02d}-01 00:00+00') to ('{y2}-{m2:02d}-01 00:00+00');"
    for y, m, y2, m2 in [(2026, 10, 2026, 11), (2026, 11, 2026, 12), (2026, 12, 2027, 1), (2027, 1, 2027, 2),
                         (2027, 2, 2027, 3), (2027, 3, 2027, 4)])
POLICIES = [{"table": "public.metrics", "retention": "3 months", "premake": 0}]


async def _session(db: str, limits: SessionLimits = SessionLimits()):
    return await connect(Target("pgp", "postgres", "127.0.0.1", 5432, db, "postgres"), limits)


async def _collect(db: str, policies=POLICIES, limits: SessionLimits = SessionLimits(),
                   warm_timeout_ms: int | None = None, **thresholds):
    """One collector run; with warm_timeout_ms, on a session whose catalog caches are warm (as a
    held-open one is: a fresh backend's first catalog query can take tens of ms on a busy machine)
    and whose statement_timeout is then set that low."""
    conn = await _session(db, limits)
    try:
        if warm_timeout_ms is not None:
            await conn.fetch(DISCOVER_SQL)
            await conn.fetch(f"select set_config('statement_timeout', '{int(warm_timeout_ms)}', false)")
        [spec] = [s for s in specs_for("postgres", conn.server_version) if s.name == "partitions"]
        ctx = spec_context(spec, instance="pgp", engine="postgres", thresholds={"partition_policies": policies, **thresholds}, now=NOW)
        return await run_collector(spec, conn, ctx)
    finally:
        await conn.close()


async def _setup(db: str, ddl: str) -> None:
    c = await asyncpg.connect(host="127.0.0.1", user="postgres", database=db)
    await c.execute(ddl)
    await c.close()


async def test_planted_problems_yield_exactly_these_findings(pgp_db):
    await _setup(pgp_db, PLANTED)
    result = await _collect(pgp_db)
    assert {(f.check, f.object, f.severity) for f in result.findings} == {
        ("missing_future_partitions", "public.events", Severity.warning),
        ("default_partition_rows", "public.events_default", Severity.warning),
        ("partition_retention_due", "public.metrics", Severity.info),
    }
    by_check = {f.check: f for f in result.findings}
    rows = by_check["default_partition_rows"].details
    assert (rows["rows"], rows["min_key"], rows["max_key"]) == (2, "2026-12-03 10:00:00+00:00", "2026-12-09 08:00:00+00:00")
    assert by_check["partition_retention_due"].details["partitions"] == ["public.metrics_p2026_06"]


async def test_clean_database_yields_no_partition_findings(pgp_db):
    await _setup(pgp_db, CLEAN)
    assert (await _collect(pgp_db)).findings == []


async def test_plan_then_apply_is_idempotent(pgp_db):
    await _setup(pgp_db, PLANTED)
    policies = [PartitionPolicy.model_validate(p) for p in POLICIES]
    conn = await _session(pgp_db)
    try:
        statements = await plan_live(conn, policies, NOW)
        assert [s.action for s in statements] == ["create_partition"] * 4 + ["detach_partition", "drop_partition"]
        # December holds the default's rows, so it is not planned (it would fail, pg_partman#510).
        assert "FROM ('2027-01-01 00:00:00+00:00') TO ('2027-02-01 00:00:00+00:00')" in statements[0].sql
        # metrics has no default partition, so the detach may be CONCURRENTLY on 15.
        assert statements[4].sql.endswith('DETACH PARTITION "public"."metrics_p2026_06" CONCURRENTLY')
        params = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": pgp_db}
        first = await apply(params, statements, lock_timeout_ms=1000)
        assert [o.status for o in first] == ["ok"] * 6, [o.message for o in first]
        assert await plan_live(conn, policies, NOW) == []
        second = await apply(params, statements, lock_timeout_ms=1000)
        assert {o.status for o in second} == {"skipped"}
        names = {t.name: t for t in await discover(conn)}
        assert len(names["events"].partitions) == 7 and "metrics" in names
        assert await conn.fetch("select 1 from pg_class where relname = 'metrics_p2026_06'") == []
    finally:
        await conn.close()


@pytest.mark.parametrize("bogus", ["public.no_such_table", "public.plain", 'public.events"; drop table plain; --'])
async def test_a_name_that_is_not_a_partitioned_table_is_refused(pgp_db, bogus):
    await _setup(pgp_db, PLANTED + "create table plain (x int);")
    conn = await _session(pgp_db)
    try:
        with pytest.raises(NotPartitioned):
            await plan_live(conn, [], NOW, table=bogus)
        assert len(await plan_live(conn, [], NOW, table="public.events")) == 4
        assert await conn.fetch("select 1 from pg_class where relname = 'plain'") != []
    finally:
        await conn.close()


async def test_apply_refuses_a_statement_whose_parent_is_not_partitioned(pgp_db):
    await _setup(pgp_db, PLANTED + "create table plain (x int);")
    conn = await _session(pgp_db)
    try:
        [stmt, *_] = await plan_live(conn, [], NOW, table="public.events")
        plain_oid = (await conn.fetch("select 'plain'::regclass::oid::bigint as o"))[0]["o"]
    finally:
        await conn.close()
    forged = replace(stmt, table_name="plain", table_oid=plain_oid)
    [outcome] = await apply({"host": "127.0.0.1", "user": "postgres", "database": pgp_db}, [forged])
    assert outcome.status == "refused" and "not a partitioned table" in outcome.message


async def test_partitions_collector_on_postgresql_18(pg18_cluster):
    """The same planted problems on the embedded PostgreSQL 18: same findings, plan applies cleanly."""
    admin = await asyncpg.connect(host=pg18_cluster.host, port=pg18_cluster.port, user="postgres", database="postgres")
    await admin.execute("create database dbf_pgp_pg18")
    try:
        c = await asyncpg.connect(host=pg18_cluster.host, port=pg18_cluster.port, user="postgres", database="dbf_pgp_pg18")
        await c.execute(PLANTED)
        await c.close()
        conn = await connect(Target("pg18", "postgres", pg18_cluster.host, pg18_cluster.port, "dbf_pgp_pg18", "postgres"))
        try:
            assert conn.server_version >= 180000
            [spec] = [s for s in specs_for("postgres", conn.server_version) if s.name == "partitions"]
            ctx = spec_context(spec, instance="pg18", engine="postgres", thresholds={"partition_policies": POLICIES}, now=NOW)
            result = await run_collector(spec, conn, ctx)
            assert {(f.check, f.object) for f in result.findings} == {
                ("missing_future_partitions", "public.events"), ("default_partition_rows", "public.events_default"),
                ("partition_retention_due", "public.metrics")}
            policies = [PartitionPolicy.model_validate(p) for p in POLICIES]
            statements = await plan_live(conn, policies, NOW)
            params = {"host": pg18_cluster.host, "port": pg18_cluster.port, "user": "postgres", "database": "dbf_pgp_pg18"}
            assert {o.status for o in await apply(params, statements)} == {"ok"}
            assert await plan_live(conn, policies, NOW) == []
        finally:
            await conn.close()
    finally:
        await admin.execute("drop database dbf_pgp_pg18 with (force)")
        await admin.close()


async def test_pg_partman_tables_are_reported_from_its_config_and_never_planned(pgp_db):
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database=pgp_db)
    try:
        if not await admin.fetchval("select count(*) from pg_available_extensions where name = 'pg_partman'"):
            pytest.skip("apt-get install postgresql-15-partman")
        await admin.execute("""
            create schema partman; create extension pg_partman schema partman;
            create table pm (ts timestamptz not null) partition by range (ts);
            select partman.create_parent('public.pm', 'ts', 'native', 'daily', p_premake := 2);
            update partman.part_config set premake = 5 where parent_table = 'public.pm';
        """)
    finally:
        await admin.close()
    conn = await _session(pgp_db)
    try:
        now = datetime.now(timezone.utc)
        tables = await discover(conn)
        assert [t.partman_premake for t in tables] == [5]
        [finding] = findings_for(tables, [PartitionPolicy(premake=1)], now).findings
        assert (finding.check, finding.object, finding.details["managed_by"]) == (
            "missing_future_partitions", "public.pm", "pg_partman")
        assert finding.details["premake"] == 5 and finding.details["partitions_ahead"] == 2
        assert await plan_live(conn, [], now) == []
    finally:
        await conn.close()


# --- issue 12 item 7: timestamptz bounds are calendar steps in the zone they were cut in ---

BERLIN = ZoneInfo("Europe/Berlin")


def berlin_ticks():
    """Daily partitions 2026-10-20 .. 2026-10-24 cut at Berlin midnight, as discovery read them in Berlin."""
    rows = json.loads((FIXTURES / "partitions_discover_berlin_pg15.json").read_text())
    [table] = tables_from_rows(rows, server_version=150020)
    return table


def test_daily_bounds_cut_in_berlin_step_over_the_october_dst_change():
    now = datetime(2026, 10, 22, 10, tzinfo=timezone.utc)
    statements = plan([berlin_ticks()], [PartitionPolicy(premake=5)], now)
    assert [(s.part_name, s.lower, s.upper) for s in statements] == [
        ("ticks_p20261024", "2026-10-24 00:00:00+02:00", "2026-10-25 00:00:00+02:00"),
        # 2026-10-25 is the last Sunday of October: a 25-hour day in Berlin.
        ("ticks_p20261025", "2026-10-25 00:00:00+02:00", "2026-10-26 00:00:00+01:00"),
        ("ticks_p20261026", "2026-10-26 00:00:00+01:00", "2026-10-27 00:00:00+01:00"),
        ("ticks_p20261027", "2026-10-27 00:00:00+01:00", "2026-10-28 00:00:00+01:00"),
    ]


def test_monthly_bounds_cut_at_utc_midnight_stay_there_when_the_session_is_in_paris():
    """The session's TimeZone prints the bounds; it is not the zone a DBA cut them in."""
    rows = [{**r, "time_zone": "Europe/Paris"}
            for r in json.loads((FIXTURES / "partitions_discover_pg15.json").read_text()) if r["table_name"] == "events"]
    [table] = tables_from_rows(rows, server_version=150020)
    assert infer_step(table.partitions) == Step(months=1)
    statements = plan([replace(table, default=None)], [PartitionPolicy(premake=6)],
                      datetime(2026, 11, 26, tzinfo=timezone.utc))
    uppers = [datetime.fromisoformat(s.upper) for s in statements]
    # Through the spring change (2027-03-28): every bound is still UTC midnight, named by the UTC day.
    assert [u.astimezone(timezone.utc) for u in uppers] == [
        datetime(y, m, 1, tzinfo=timezone.utc) for y, m in [(2027, 1), (2027, 2), (2027, 3), (2027, 4), (2027, 5), (2027, 6)]]
    assert statements[4].upper == "2027-05-01 02:00:00+02:00" and statements[4].part_name == "events_p20270401"


async def test_premade_timestamptz_partitions_are_berlin_midnights_across_dst(pgp_db):
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database=pgp_db)
    try:
        await admin.execute(f"alter database \"{pgp_db}\" set timezone = 'Europe/Berlin'")
    finally:
        await admin.close()
    await _setup(pgp_db, "create table ticks (ts timestamptz not null, v int) partition by range (ts);" + "".join(
        f"create table ticks_p202610{d} partition of ticks for values from ('2026-10-{d}') to ('2026-10-{d + 1}');"
        for d in range(20, 24)))
    now = datetime(2026, 10, 22, 10, tzinfo=timezone.utc)
    conn = await _session(pgp_db)
    try:
        statements = await plan_live(conn, [PartitionPolicy(premake=5)], now)
        params = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": pgp_db}
        assert {o.status for o in await apply(params, statements)} == {"ok"}
        bounds = await conn.fetch("select c.relname, pg_get_expr(c.relpartbound, c.oid) as b from pg_inherits i "
                                  "join pg_class c on c.oid = i.inhrelid where i.inhparent = 'ticks'::regclass order by 1")
        assert [(r["relname"], r["b"]) for r in bounds[-4:]] == [
            ("ticks_p20261024", "FOR VALUES FROM ('2026-10-24 00:00:00+02') TO ('2026-10-25 00:00:00+02')"),
            ("ticks_p20261025", "FOR VALUES FROM ('2026-10-25 00:00:00+02') TO ('2026-10-26 00:00:00+01')"),
            ("ticks_p20261026", "FOR VALUES FROM ('2026-10-26 00:00:00+01') TO ('2026-10-27 00:00:00+01')"),
            ("ticks_p20261027", "FOR VALUES FROM ('2026-10-27 00:00:00+01') TO ('2026-10-28 00:00:00+01')"),
        ]
        [ticks] = await discover(conn)
        parts = sorted(ticks.partitions, key=lambda p: p.lower)
        assert all(a.upper == b.lower for a, b in zip(parts, parts[1:]))  # contiguous, no gap, no overlap
        assert all(p.lower.astimezone(BERLIN).time() == time(0) for p in parts)
        assert await plan_live(conn, [PartitionPolicy(premake=5)], now) == []
        # A DBA cutting the next day by hand in Berlin meets no overlap with what dbfleet made.
        await _setup(pgp_db, "create table ticks_p20261028 partition of ticks for values from ('2026-10-28') to ('2026-10-29')")
    finally:
        await conn.close()


# --- issue 12 item 6: a default partition too big to count spoils nothing ---

BIG_DEFAULT = """
alter database "{db}" set max_parallel_workers_per_gather = 0;
create table readings (ts timestamptz not null, v int) partition by range (ts);
create index on readings (ts);
create table readings_p2026_10 partition of readings for values from ('2026-10-01 00:00+00') to ('2026-11-01 00:00+00');
create table readings_p2026_11 partition of readings for values from ('2026-11-01 00:00+00') to ('2026-12-01 00:00+00');
create table readings_default partition of readings default;
insert into readings_default select '2027-03-01 00:00+00'::timestamptz + i * interval '1 second', i
  from generate_series(1, {rows}) i;
analyze readings_default;
"""
BIG_ROWS = 1_500_000


async def test_a_default_too_big_to_count_is_estimated_and_spoils_no_other_table(pgp_db):
    await _setup(pgp_db, PLANTED + BIG_DEFAULT.format(db=pgp_db, rows=BIG_ROWS))
    # count(*) over 1.5M rows takes ~100 ms here; every query the collector needs takes a few.
    result = await _collect(pgp_db, warm_timeout_ms=40)
    by_key = {(f.check, f.object): f for f in result.findings}
    assert set(by_key) == {
        ("missing_future_partitions", "public.events"), ("default_partition_rows", "public.events_default"),
        ("partition_retention_due", "public.metrics"),
        ("missing_future_partitions", "public.readings"), ("default_partition_rows", "public.readings_default")}
    small = by_key[("default_partition_rows", "public.events_default")].details
    assert (small["rows"], small["rows_estimated"]) == (2, False)
    big = by_key[("default_partition_rows", "public.readings_default")]
    assert big.details["rows_estimated"] is True and big.details["rows_source"] == "pg_class.reltuples"
    assert 0.8 * BIG_ROWS < big.details["rows"] < 1.2 * BIG_ROWS and "estimate" in big.title
    # March 2027 holds the default's rows (found by an exists probe, not a count): it is blocked.
    future = by_key[("missing_future_partitions", "public.readings")].details
    assert future["blocked_by_default_rows"] == ["[2027-03-01 00:00:00+00:00, 2027-04-01 00:00:00+00:00)"]
    assert future["to_create"][:3] == ["[2026-12-01 00:00:00+00:00, 2027-01-01 00:00:00+00:00)",
                                       "[2027-01-01 00:00:00+00:00, 2027-02-01 00:00:00+00:00)",
                                       "[2027-02-01 00:00:00+00:00, 2027-03-01 00:00:00+00:00)"]


async def test_a_locked_default_partition_is_reported_and_the_other_tables_still_are(pgp_db):
    await _setup(pgp_db, PLANTED)
    holder = await asyncpg.connect(host="127.0.0.1", user="postgres", database=pgp_db)
    tx = holder.transaction()
    await tx.start()
    await holder.execute("lock table events_default in access exclusive mode")
    try:
        result = await _collect(pgp_db, limits=SessionLimits(lock_timeout_ms=200))
        conn = await _session(pgp_db, SessionLimits(lock_timeout_ms=200))
        try:
            statements = await plan_live(conn, [PartitionPolicy.model_validate(p) for p in POLICIES], NOW)
        finally:
            await conn.close()
    finally:
        await tx.rollback()
        await holder.close()
    by_key = {(f.check, f.object): f for f in result.findings}
    assert ("partition_retention_due", "public.metrics") in by_key
    unread = by_key[("default_partition_rows", "public.events_default")]
    assert unread.severity == Severity.info and unread.details["rows"] is None
    assert "lock timeout" in unread.details["probe_error"]
    # Nothing is planned into a range the default may hold rows in; metrics' retention still is.
    assert [s.action for s in statements] == ["detach_partition", "drop_partition"]


async def test_exact_count_threshold_is_overridable(pgp_db):
    await _setup(pgp_db, PLANTED)
    result = await _collect(pgp_db, default_partition_exact_count_max_rows=2)
    [d] = [f for f in result.findings if f.check == "default_partition_rows"]
    # Never analyzed (reltuples -1): the LIMIT probe says "at least 2", and that is what is shown.
    assert (d.details["rows"], d.details["rows_estimated"], d.details["rows_source"]) == (2, True, "limit probe")
    assert "at least 2" in d.title


def test_an_estimated_default_says_so_in_its_finding():
    table = replace(recorded_tables()["events"], default=DefaultPartition(
        "public", "events_default", 3_400_000, estimated=True, reltuples=3.4e6))
    [d] = [f for f in findings_for([table], [], NOW).findings if f.check == "default_partition_rows"]
    assert d.title.startswith("about 3,400,000 row(s) in default partition public.events_default")
    assert (d.details["rows_estimated"], d.details["min_key"]) == (True, None)


def test_a_midnight_repeated_by_the_dst_change_is_read_as_postgresql_reads_it():
    """Cuba falls back at 01:00 on 2026-11-01: that midnight happens twice, PostgreSQL takes -05."""
    rows = [{"table_oid": 1, "schema": "public", "table_name": "t", "key_column": "ts", "key_type": "timestamptz",
             "part_schema": "public", "part_name": f"t_{d}", "is_default": False, "time_zone": "America/Havana",
             "lower": f"2026-10-{d}T00:00:00-04", "upper": f"2026-10-{d + 1}T00:00:00-04"} for d in (28, 29, 30)]
    [table] = tables_from_rows(rows)
    statements = plan([table], [PartitionPolicy(premake=4)], datetime(2026, 10, 29, 12, tzinfo=timezone.utc))
    # As `select '2026-11-01 00:00'::timestamptz` prints with TimeZone America/Havana on PG 15.
    assert [s.upper for s in statements] == [
        "2026-11-01 00:00:00-05:00", "2026-11-02 00:00:00-05:00", "2026-11-03 00:00:00-05:00"]
