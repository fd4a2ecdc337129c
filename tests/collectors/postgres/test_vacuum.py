"""Vacuum and WAL health: transforms on recorded rows; a real table with autovacuum off on PG 15."""

from __future__ import annotations

import asyncpg
import pytest

from collectors.engines.base import Target, connect
from collectors.postgres.vacuum import SPEC, WAL_SPEC, thresholds_for, transform, wal_transform
from collectors.runner import run_collector
from tests.collectors.spec_context import spec_context

SETTINGS = [{"name": "autovacuum", "setting": "on"}, {"name": "autovacuum_vacuum_threshold", "setting": "50"},
            {"name": "autovacuum_vacuum_scale_factor", "setting": "0.2"},
            {"name": "autovacuum_analyze_threshold", "setting": "50"},
            {"name": "autovacuum_analyze_scale_factor", "setting": "0.1"}]


def table(dead=0, reltuples=10_000.0, vacuum_age=None, mod=0, analyze_age=60.0, xid_age=1000, mxid_age=1,
          reloptions=()):
    return {"schema": "public", "table": "orders", "n_live_tup": int(reltuples), "n_dead_tup": dead,
            "n_mod_since_analyze": mod, "reltuples": reltuples, "reloptions": list(reloptions),
            "vacuum_age_s": vacuum_age, "autovacuum_age_s": vacuum_age, "analyze_age_s": analyze_age,
            "autoanalyze_age_s": analyze_age, "xid_age": xid_age, "mxid_age": mxid_age}


def ctx(spec=SPEC, **thresholds):
    return spec_context(spec, instance="pg-a", engine="postgres", thresholds=thresholds)


def test_threshold_is_computed_from_settings_and_reloptions():
    assert thresholds_for(table(), {r["name"]: r["setting"] for r in SETTINGS})["vacuum"] == 50 + 0.2 * 10_000
    tuned = thresholds_for(table(reloptions=["autovacuum_vacuum_scale_factor=0.01", "autovacuum_enabled=false"]),
                           {r["name"]: r["setting"] for r in SETTINGS})
    assert tuned["vacuum"] == 50 + 0.01 * 10_000 and tuned["enabled"] is False


CASES = [
    ("under the threshold", table(dead=2000), set()),
    ("over it, vacuumed a minute ago", table(dead=2100, vacuum_age=60), set()),
    ("over it, never vacuumed", table(dead=2100), {"vacuum_overdue"}),
    ("over a per-table threshold", table(dead=200, vacuum_age=7200,
                                         reloptions=["autovacuum_vacuum_scale_factor=0.01"]), {"vacuum_overdue"}),
    ("stale statistics", table(mod=5000, analyze_age=90_000), {"statistics_stale"}),
    ("old relfrozenxid", table(xid_age=600_000_000), {"table_xid_age"}),
    ("old multixact", table(mxid_age=1_600_000_000), {"table_xid_age"}),
]


@pytest.mark.parametrize("row,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transform(row, expected):
    assert {f.check for f in transform([row], ctx(), SETTINGS).findings} == expected


def test_overdue_recommends_per_table_ddl():
    [f] = transform([table(dead=3_000_000, reltuples=10_000_000)], ctx(), SETTINGS).findings
    assert 'ALTER TABLE "public"."orders" SET (autovacuum_enabled = on, autovacuum_vacuum_scale_factor = 0.01' \
        in f.recommendation
    assert f.details["vacuum_threshold"] == 2_000_050


def test_wal_health():
    archiver = [{"archived_count": 5, "failed_count": 3, "last_failed_wal": "0000000100000000000000A1",
                 "failing": True, "archive_mode": "on"}]
    result = wal_transform(archiver, [{"timed": 4, "requested": 40}], [{"datname": "app", "temp_bytes": 9}],
                           ctx(WAL_SPEC))
    assert {f.check for f in result.findings} == {"wal_archiving_failing", "checkpoints_requested"}
    calm = wal_transform([{**archiver[0], "failing": False}], [{"timed": 40, "requested": 4}], [], ctx(WAL_SPEC))
    assert calm.findings == []


async def test_dead_rows_on_a_table_with_autovacuum_off_are_overdue(pgp_db):
    c = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database=pgp_db)
    try:
        await c.execute("create table orders (id int) with (autovacuum_enabled = false); "
                        "insert into orders select generate_series(1, 2000); analyze orders; delete from orders")
        await c.execute("select pg_stat_force_next_flush()")
    finally:
        await c.close()
    conn = await connect(Target("node", "postgres", "127.0.0.1", 5432, pgp_db, "postgres"))
    try:
        result = await run_collector(SPEC, conn, ctx())
        wal = await run_collector(WAL_SPEC, conn, ctx(WAL_SPEC))
    finally:
        await conn.close()
    [f] = [f for f in result.findings if f.object == "public.orders" and f.check == "vacuum_overdue"]
    assert f.details["n_dead_tup"] == 2000 and f.details["vacuum_threshold"] == 50 + 400
    assert f.details["autovacuum_enabled"] is False
    assert any(s.metric == "temp_bytes_total" and s.object == pgp_db for s in wal.samples)
