"""Replication: transforms on recorded rows; a real PG 15 primary + streaming standby with induced lag."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from collectors.engines.base import Target, connect
from collectors.postgres.replication import (
    RECEIVER_SQL,
    SLOTS_SQL,
    SPEC,
    primary_transform,
    slots_transform,
    standby_transform,
)
from collectors.runner import run_collector
from collectors.spec import Context, Severity


def standby_row(name="s1", lag_s=0.0, lag_bytes=0, state="streaming", addr="10.0.0.2"):
    return {"application_name": name, "client_addr": addr, "client_hostname": "", "state": state,
            "sync_state": "async", "sent_lag_bytes": 0, "write_lag_bytes": 0, "flush_lag_bytes": 0,
            "replay_lag_bytes": lag_bytes, "write_lag_s": 0.0, "flush_lag_s": 0.0, "replay_lag_s": lag_s}


def slot_row(name="s1_slot", active=True, retained=0, wal_status="reserved"):
    return {"slot_name": name, "slot_type": "physical", "database": "", "active": active, "wal_status": wal_status,
            "retained_bytes": retained, "xmin_age": None, "catalog_xmin_age": None}


def ctx(**extra):
    thresholds = extra.pop("thresholds", {})
    return Context(instance="pg-a", engine="postgres", thresholds=thresholds, extra=extra)


PRIMARY_CASES = [
    ("caught up", [standby_row()], {}, set()),
    ("idle primary: NULL lag reads as 0", [standby_row(lag_s=0.0)], {"expected_standbys": ["s1"]}, set()),
    ("warning", [standby_row(lag_s=45.0, lag_bytes=10_000)], {}, {("replication_lag", "s1", Severity.warning)}),
    ("critical", [standby_row(lag_s=301.0)], {}, {("replication_lag", "s1", Severity.critical)}),
    ("expected by address", [standby_row(name="walreceiver")], {"expected_standbys": ["10.0.0.2"]}, set()),
    ("missing standby", [standby_row()], {"expected_standbys": ["s1", "s2"]},
     {("standby_disconnected", "s2", Severity.critical)}),
    ("no standbys at all", [], {"expected_standbys": ["s1"]}, {("standby_disconnected", "s1", Severity.critical)}),
]


@pytest.mark.parametrize("case, rows, extra, expected", PRIMARY_CASES, ids=[c[0] for c in PRIMARY_CASES])
def test_primary_transform(case, rows, extra, expected):
    result = primary_transform(rows, ctx(**extra))
    assert {(f.check, f.object, f.severity) for f in result.findings} == expected


def test_primary_samples_per_standby():
    result = primary_transform([standby_row("s1", 4.5, 123), standby_row("s2", 0.0, 0)], ctx())
    assert {(s.metric, s.object, s.value) for s in result.samples} == {
        ("replication_lag_seconds", "s1", 4.5), ("replication_lag_bytes", "s1", 123.0),
        ("replication_lag_seconds", "s2", 0.0), ("replication_lag_bytes", "s2", 0.0)}


SLOT_CASES = [
    ("active, small", [slot_row()], set()),
    ("inactive", [slot_row(active=False)], {("replication_slot_inactive", "s1_slot", Severity.warning)}),
    ("retaining", [slot_row(retained=2 << 30)], {("replication_slot_retaining_wal", "s1_slot", Severity.warning)}),
    ("retaining, unreserved", [slot_row(active=False, retained=5 << 30, wal_status="unreserved")],
     {("replication_slot_inactive", "s1_slot", Severity.warning),
      ("replication_slot_retaining_wal", "s1_slot", Severity.critical)}),
]


@pytest.mark.parametrize("case, rows, expected", SLOT_CASES, ids=[c[0] for c in SLOT_CASES])
def test_slots_transform(case, rows, expected):
    result = slots_transform(rows, ctx())
    assert {(f.check, f.object, f.severity) for f in result.findings} == expected


STANDBY_CASES = [
    ("caught up (receive = replay reads 0)", {"replay_lag_s": 0.0, "replay_lag_bytes": 0}, "streaming", set()),
    ("lagging", {"replay_lag_s": 40.0, "replay_lag_bytes": 4096}, "streaming",
     {("replication_lag", "pg-a", Severity.warning)}),
    ("receiver down", {"replay_lag_s": 0.0, "replay_lag_bytes": 0}, None,
     {("wal_receiver_not_streaming", "pg-a", Severity.critical)}),
]


@pytest.mark.parametrize("case, row, status, expected", STANDBY_CASES, ids=[c[0] for c in STANDBY_CASES])
def test_standby_transform(case, row, status, expected):
    row = {"receive_lsn": "0/3000000", "replay_lsn": "0/3000000", "replay_paused": False, **row}
    receivers = [] if status is None else [{"status": status, "sender_host": "10.0.0.1", "sender_port": 5432,
                                            "slot_name": "s", "flushed_lsn": "0/3000000", "last_msg_age_s": 0.1}]
    result = standby_transform([row], receivers, ctx())
    assert {(f.check, f.object, f.severity) for f in result.findings} == expected
    assert {s.metric for s in result.samples} == {"replication_lag_seconds", "replication_lag_bytes"}


@pytest.mark.parametrize("version, column", [(120005, "received_lsn"), (130000, "flushed_lsn"), (180000, "flushed_lsn")])
def test_wal_receiver_sql_by_version(version, column):
    sql = RECEIVER_SQL[max(k for k in RECEIVER_SQL if k <= version)]
    assert column in sql


def test_slot_sql_has_wal_status_from_13():
    assert "wal_status as wal_status" in SLOTS_SQL[130000] and "'' as wal_status" in SLOTS_SQL[100000]


# --- a real primary + streaming standby (PostgreSQL 15) ---

async def _collect(cluster, **extra):
    conn = await connect(Target("node", "postgres", cluster.host, cluster.port, "postgres", "postgres"))
    try:
        thresholds = extra.pop("thresholds", {"replication_lag_warning_s": 2})
        return await run_collector(SPEC, conn, Context(instance="node", engine="postgres",
                                                       thresholds=thresholds, extra=extra))
    finally:
        await conn.close()


async def _sql(cluster, *statements):
    c = await asyncpg.connect(host=cluster.host, port=cluster.port, user="postgres", database="postgres")
    try:
        return [await c.fetch(s) for s in statements]
    finally:
        await c.close()


async def _wait_for(predicate, attempts=100):
    """Poll until the server reaches the state under test (not a timing assertion)."""
    for _ in range(attempts):
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("state never reached")


async def test_clean_pair_has_no_replication_findings(pg15_replica_pair):
    pair = pg15_replica_pair

    async def streaming():
        [rows] = await _sql(pair.primary, "select state from pg_stat_replication")
        return [r["state"] for r in rows] == ["streaming"]

    await _wait_for(streaming)
    primary = await _collect(pair.primary, expected_standbys=[pair.standby_name])
    assert primary.findings == []
    assert {(s.metric, s.object) for s in primary.samples} >= {
        ("replication_lag_seconds", pair.standby_name), ("replication_lag_bytes", pair.standby_name)}
    standby = await _collect(pair.standby)
    assert standby.findings == []


async def test_lagging_standby_and_inactive_slot(pg15_replica_pair):
    pair = pg15_replica_pair
    # A freshly started standby has replayed no commit yet (pg_last_xact_replay_timestamp() is NULL).
    await _sql(pair.primary, "create table if not exists t (x int)", "insert into t values (0)")

    async def replayed():
        [rows] = await _sql(pair.standby, "select pg_last_xact_replay_timestamp() is not null as r")
        return rows[0]["r"]

    await _wait_for(replayed)
    await _sql(pair.standby, "alter system set recovery_min_apply_delay = '5s'", "select pg_reload_conf()")
    await _sql(pair.primary, "select pg_create_physical_replication_slot('dbf_pgp_abandoned')")
    try:
        await _sql(pair.primary, "insert into t values (1)")

        async def lagging():
            await _sql(pair.primary, "insert into t values (2)")
            [rows] = await _sql(pair.primary, "select extract(epoch from replay_lag) as s from pg_stat_replication")
            return rows and (rows[0]["s"] or 0) > 2

        await _wait_for(lagging)
        primary = await _collect(pair.primary, expected_standbys=[pair.standby_name, "dbf_gone"])
        got = {(f.check, f.object) for f in primary.findings}
        assert got == {("replication_lag", pair.standby_name), ("replication_slot_inactive", "dbf_pgp_abandoned"),
                       ("standby_disconnected", "dbf_gone")}
        lag = next(f for f in primary.findings if f.check == "replication_lag")
        assert lag.severity is Severity.warning and lag.details["replay_lag_s"] > 2
        standby = await _collect(pair.standby)
        assert {(f.check, f.object) for f in standby.findings} == {("replication_lag", "node")}
    finally:
        await _sql(pair.primary, "select pg_drop_replication_slot('dbf_pgp_abandoned')")
        await _sql(pair.standby, "alter system reset recovery_min_apply_delay", "select pg_reload_conf()")
