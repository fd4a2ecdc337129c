"""Replication: transforms on recorded rows; a real PG 15 primary + streaming standby with induced lag."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

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
from collectors.spec import Result, Severity
from tests.collectors.spec_context import spec_context


def standby_row(name="s1", lag_s=0.0, lag_bytes=0, state="streaming", addr="10.0.0.2"):
    return {"application_name": name, "client_addr": addr, "client_hostname": "", "state": state,
            "sync_state": "async", "sent_lag_bytes": 0, "write_lag_bytes": 0, "flush_lag_bytes": 0,
            "replay_lag_bytes": lag_bytes, "write_lag_s": 0.0, "flush_lag_s": 0.0, "replay_lag_s": lag_s}


def slot_row(name="s1_slot", active=True, retained=0, wal_status="reserved"):
    return {"slot_name": name, "slot_type": "physical", "database": "", "active": active, "wal_status": wal_status,
            "retained_bytes": retained, "xmin_age": None, "catalog_xmin_age": None}


def ctx(**extra):
    thresholds = extra.pop("thresholds", {})
    tags = extra.pop("tags", {})
    return spec_context(SPEC, instance="pg-a", engine="postgres", thresholds=thresholds, tags=tags, extra=extra)


def linked(name, stream_name, streaming=True, reachable=True):
    """A standby app/topology.py linked to this primary, as the replication provider hands it over."""
    return {"name": name, "stream_name": stream_name, "streaming": streaming, "reachable": reachable}


PRIMARY_CASES = [
    ("caught up", [standby_row()], {}, set()),
    ("idle primary: NULL lag reads as 0", [standby_row(lag_s=0.0)], {"linked_standbys": [linked("pg-s1", "s1")]},
     set()),
    ("warning", [standby_row(lag_s=45.0, lag_bytes=10_000)], {}, {("replication_lag", "s1", Severity.warning)}),
    ("critical", [standby_row(lag_s=301.0)], {}, {("replication_lag", "s1", Severity.critical)}),
    ("matched by the name its receiver connects with, not the inventory name", [standby_row(name="walreceiver")],
     {"linked_standbys": [linked("pg-standby", "walreceiver")]}, set()),
    ("missing standby", [standby_row()], {"linked_standbys": [linked("pg-s1", "s1"), linked("pg-s2", "s2", False)]},
     {("standby_disconnected", "pg-s2", Severity.critical)}),
    ("two share the default name; the one not streaming is named", [standby_row(name="walreceiver")],
     {"linked_standbys": [linked("pg-b", "walreceiver", False, False), linked("pg-a", "walreceiver")]},
     {("standby_disconnected", "pg-b", Severity.critical)}),
    ("catching up counts as connected", [standby_row(state="catchup")], {"linked_standbys": [linked("pg-s1", "s1")]},
     set()),
    ("no standbys at all", [], {"linked_standbys": [linked("pg-s1", "s1")]},
     {("standby_disconnected", "pg-s1", Severity.critical)}),
    ("fewer than the expected count tag", [standby_row()], {"tags": {"expected_standbys": "2"}},
     {("standby_disconnected", "expected standbys", Severity.critical)}),
    ("the expected count met", [standby_row(), standby_row("s2")], {"tags": {"expected_standbys": "2"}}, set()),
    ("another primary with this system identifier", [], {"other_primaries": ["pg-old"]},
     {("multiple_primaries", "pg-old", Severity.critical)}),
]


@pytest.mark.parametrize("case, rows, extra, expected", PRIMARY_CASES, ids=[c[0] for c in PRIMARY_CASES])
def test_primary_transform(case, rows, extra, expected):
    first = primary_transform(rows, ctx(**extra))
    again = ctx(**extra)
    again.previous = first.state
    result = primary_transform(rows, again)
    assert {(f.check, f.object, f.severity) for f in result.findings} == expected


def test_a_linked_standby_is_reported_missing_on_the_second_run_in_a_row():
    """One promoted a moment ago still stands linked in the topology the sweep started from."""
    extra = {"linked_standbys": [linked("pg-s1", "s1")]}
    first = primary_transform([], ctx(**extra))
    assert first.findings == [] and first.state == {"missing": ["pg-s1"]}
    back = primary_transform([standby_row()], spec_context(SPEC, "pg-a", "postgres", extra=extra, previous=first.state))
    assert back.findings == [] and back.state == {"missing": []}
    gone = primary_transform([], spec_context(SPEC, "pg-a", "postgres", extra=extra, previous=first.state))
    assert [(f.check, f.object) for f in gone.findings] == [("standby_disconnected", "pg-s1")]


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


# --- Aurora PostgreSQL: recorded rows written from AWS's documentation ---

AURORA = json.loads((Path(__file__).parent.parent / "fixtures" / "postgres" / "replication_aurora.json").read_text())
WRITER, READER_1, READER_2 = "db-124-001-instance-03", "db-124-001-instance-01", "db-124-001-instance-02"
NO_AURORA = {"aurora_version": False, "replica_status": False, "instance_identifier": False}


def aurora_rows(view: str, lag_ms: dict[str, float] | None = None, knows_itself: bool = True) -> list[dict]:
    """The fixture's rows seen from the writer or from reader -01, with some readers lagging."""
    rows = [dict(r) for r in AURORA[view]]
    for r in rows:
        r["replica_lag_in_msec"] = (lag_ms or {}).get(r["server_id"], r["replica_lag_in_msec"])
        if not knows_itself:  # Aurora before 13.7 has no aurora_db_instance_identifier()
            r["is_self"] = None
    return rows


class RecordedAurora:
    """An Aurora PostgreSQL instance answering from recorded rows (no Aurora can run here).

    It stands in for the server only; the collector's own code runs unchanged. Asked the vanilla
    standby questions, it answers as an Aurora reader would: in recovery, but with nothing received
    over a WAL stream and no WAL receiver."""

    engine = "postgres"

    def __init__(self, rows: list[dict], is_standby: bool, probe: dict | None = None):
        self.rows, self.is_standby, self.probe = rows, is_standby, probe or AURORA["probe"]
        self.server_version, self.asked = 150004, []

    async def fetch(self, sql: str, *args) -> list[dict]:
        self.asked.append(sql)
        if "to_regproc" in sql:  # the run's one statement: the probe, and nothing streams here
            standby = {"receive_lsn": "", "replay_lsn": "", "replay_lag_bytes": 0, "replay_lag_s": 0.0,
                       "replay_timestamp_known": False, "replay_paused": False}
            return [{**self.probe, "senders": None if self.is_standby else "[]", "receivers": "[]", "slots": "[]",
                     "standby": json.dumps(standby) if self.is_standby else None}]
        if "aurora_replica_status()" in sql:
            return [dict(r) for r in self.rows]
        if "pg_last_wal_receive_lsn" in sql:
            return [{"receive_lsn": "", "replay_lsn": "", "replay_lag_bytes": 0, "replay_lag_s": 0.0,
                     "replay_timestamp_known": False, "replay_paused": False}]
        return []  # pg_stat_wal_receiver, pg_stat_replication, pg_replication_slots: nothing here

    async def close(self) -> None:
        pass


async def collect_recorded(node: RecordedAurora, engine: str = "aurora-postgres", **extra) -> Result:
    thresholds = extra.pop("thresholds", {})
    return await run_collector(SPEC, node, spec_context(SPEC, instance="node", engine=engine, thresholds=thresholds,
                                                   extra=extra))


@pytest.mark.parametrize("engine", ["aurora-postgres", "postgres"])  # the inventory name is only a hint
async def test_aurora_reader_has_no_wal_receiver_finding_and_lag_from_replica_status(engine):
    node = RecordedAurora(aurora_rows("reader_view"), is_standby=True)
    result = await collect_recorded(node, engine)
    assert result.findings == []
    # One statement (probe, and what a vanilla server streams: nothing here), then the replica status.
    assert len(node.asked) == 2 and "aurora_replica_status()" in node.asked[1]
    assert {(s.metric, s.object, s.value) for s in result.samples} == {
        ("replication_lag_seconds", READER_1, 0.013), ("replication_lag_seconds", READER_2, 0.013)}


AURORA_LAG_CASES = [
    ("writer, readers caught up", "writer_view", {}, True, set()),
    ("writer sees a lagging reader", "writer_view", {READER_2: 45_000}, True,
     {("replication_lag", READER_2, Severity.warning)}),
    ("writer, reader past the critical mark", "writer_view", {READER_1: 301_000}, True,
     {("replication_lag", READER_1, Severity.critical)}),
    ("reader lagging itself", "reader_view", {READER_1: 45_000}, True,
     {("replication_lag", READER_1, Severity.warning)}),
    # One home per problem: another reader's lag is reported by the writer and by that reader.
    ("reader, another reader lagging", "reader_view", {READER_2: 45_000}, True, set()),
    ("reader that cannot name itself reports every reader", "reader_view", {READER_2: 45_000}, False,
     {("replication_lag", READER_2, Severity.warning)}),
]


@pytest.mark.parametrize("case, view, lag_ms, knows_itself, expected", AURORA_LAG_CASES,
                         ids=[c[0] for c in AURORA_LAG_CASES])
async def test_aurora_replication_lag(case, view, lag_ms, knows_itself, expected):
    node = RecordedAurora(aurora_rows(view, lag_ms, knows_itself), is_standby=view == "reader_view")
    result = await collect_recorded(node)
    assert {(f.check, f.object, f.severity) for f in result.findings} == expected
    lags = {s.object: s.value for s in result.samples if s.metric == "replication_lag_seconds"}
    assert lags == {READER_1: lag_ms.get(READER_1, 13) / 1000, READER_2: lag_ms.get(READER_2, 13) / 1000}
    for f in result.findings:
        assert f.details["replica_lag_in_msec"] == lag_ms[f.object] and "aurora_replica_status()" in f.details["sql"]


@pytest.mark.parametrize("expected, found", [
    ([READER_1, READER_2], set()),  # readers are not in pg_stat_replication on Aurora: that is no outage
    ([READER_1, "db-124-001-instance-04"], {("standby_disconnected", "db-124-001-instance-04")}),
])
async def test_aurora_writer_expects_readers_in_replica_status(expected, found):
    node = RecordedAurora(aurora_rows("writer_view"), is_standby=False)
    result = await collect_recorded(node, expected_standbys=expected)
    assert {(f.check, f.object) for f in result.findings} == found
    assert any("pg_replication_slots" in sql for sql in node.asked)  # the writer's logical slots still count


@pytest.mark.parametrize("engine, probe, aurora", [
    ("postgres", NO_AURORA, False),
    ("aurora-postgres", NO_AURORA, False),  # the inventory says Aurora, the server has no such function
    ("postgres", {**NO_AURORA, "replica_status": True}, False),  # somebody's own function of that name
    ("aurora-postgres", {**NO_AURORA, "replica_status": True}, True),
])
async def test_aurora_is_detected_by_its_functions(engine, probe, aurora):
    node = RecordedAurora(aurora_rows("reader_view"), is_standby=True, probe=probe)
    result = await collect_recorded(node, engine)
    assert any("aurora_replica_status()" in sql for sql in node.asked) == aurora
    assert len(node.asked) == (2 if aurora else 1)  # the run's one statement reads the WAL receiver too
    assert ("wal_receiver_not_streaming" in {f.check for f in result.findings}) == (not aurora)


# --- the Aurora SQL on a real server: Aurora's functions re-created from the documented columns ---

AURORA_COLUMNS = """server_id text, session_id text, durable_lsn bigint, highest_lsn_rcvd bigint,
    current_read_lsn bigint, cur_replay_latency_in_usec bigint, active_txns int, is_current boolean,
    last_transport_error int, last_error_timestamp timestamptz, last_update_timestamp timestamptz,
    feedback_xmin bigint, feedback_epoch int, replica_lag_in_msec real, log_stream_speed_in_kib_per_second real,
    log_buffer_sequence_number bigint, oldest_read_view_trx_id bigint, oldest_read_view_lsn bigint,
    pending_read_ios int, read_ios bigint, iops int, cpu real"""


async def _emulate_aurora(dbname: str, rows: list[dict], instance: str) -> None:
    """AWS documents names and meanings but not types; the types here are our reading of the examples."""
    recorded = json.dumps([{k: v for k, v in r.items() if k not in ("is_self", "last_update_age_s")} for r in rows])
    c = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database=dbname)
    try:
        await c.execute(f"""
            create function aurora_version() returns text language sql as $$ select '15.4.1' $$;
            create function aurora_db_instance_identifier() returns varchar language sql as $$ select '{instance}' $$;
            create function aurora_replica_status() returns table({AURORA_COLUMNS}) language sql as $fn$
                select * from jsonb_to_recordset($json${recorded}$json$::jsonb) as x({AURORA_COLUMNS}) $fn$;""")
    finally:
        await c.close()


@pytest.mark.parametrize("instance, lag_ms, expected", [
    (WRITER, {READER_2: 45_000}, {("replication_lag", READER_2)}),
    (READER_1, {READER_2: 45_000}, set()),
    (READER_1, {READER_1: 45_000}, {("replication_lag", READER_1)}),
])
async def test_aurora_sql_runs_on_a_real_server(pgp_db, instance, lag_ms, expected):
    await _emulate_aurora(pgp_db, aurora_rows("writer_view", lag_ms), instance)
    conn = await connect(Target("node", "postgres", "127.0.0.1", 5432, pgp_db, "postgres"))
    try:
        result = await run_collector(SPEC, conn, spec_context(SPEC, instance="node", engine="postgres"))
    finally:
        await conn.close()
    # The shared server may carry other tests' slots or standbys: look at this cluster's names only.
    cluster = {WRITER, READER_1, READER_2}
    findings = [f for f in result.findings if f.object in cluster or f.check == "wal_receiver_not_streaming"]
    assert {(f.check, f.object) for f in findings} == expected
    lags = {s.object: s.value for s in result.samples if s.metric == "replication_lag_seconds" and s.object in cluster}
    assert lags == pytest.approx({READER_1: lag_ms.get(READER_1, 13) / 1000, READER_2: lag_ms.get(READER_2, 13) / 1000})
    assert all(f.details["last_update_age_s"] > 0 for f in findings)  # computed by the server from the timestamp


# --- a real primary + streaming standby (PostgreSQL 15) ---

async def _collect(cluster, **extra):
    conn = await connect(Target("node", "postgres", cluster.host, cluster.port, "postgres", "postgres"))
    try:
        thresholds = extra.pop("thresholds", {"replication_lag_warning_s": 2})
        previous = extra.pop("previous", None)
        return await run_collector(SPEC, conn, spec_context(SPEC, instance="node", engine="postgres", thresholds=thresholds,
                                                       previous=previous, extra=extra))
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
    primary = await _collect(pair.primary, linked_standbys=[linked("pg-standby", pair.standby_name)])
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
        primary = await _collect(pair.primary, linked_standbys=[linked("pg-standby", pair.standby_name),
                                                                linked("dbf_gone", "dbf_gone", False, False)],
                                 previous={"missing": ["dbf_gone"]})
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
