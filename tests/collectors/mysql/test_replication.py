"""replication transform on recorded SHOW REPLICA/SLAVE STATUS rows of MySQL 8, 5.7 and MariaDB,
and Aurora MySQL's replica_host_status (recorded rows only: no Aurora here)."""

from __future__ import annotations

import pytest

from collectors.common.versions import closest_lower
from collectors.mysql import replication

from .conftest import ctx_for, recorded

MYSQL8 = recorded("mysql_8_0")
MARIADB = recorded("mariadb_10_11")


def _run(data, rows, **kw):
    result = replication.transform([{"replica": rows}], ctx_for(replication.SPEC, data, **kw))
    return {(f.check, f.object, f.severity.value) for f in result.findings}, result


@pytest.mark.parametrize("version, sql", [
    (50744, "SHOW SLAVE STATUS"), (80021, "SHOW SLAVE STATUS"), (80036, "SHOW REPLICA STATUS"),
    (100500, "SHOW ALL SLAVES STATUS"), (100611, "SHOW ALL REPLICAS STATUS"),
])
def test_statement_by_flavour_and_version(version, sql):
    assert closest_lower(replication.REPLICA_SQL, version) == sql


@pytest.mark.parametrize("scenario, expected", [
    ("replica_healthy", set()),
    ("replica_lagging", {("replication_lag", "db-primary.internal:3306", "critical")}),
    ("replica_delayed", set()),  # 3610 s behind with SOURCE_DELAY=3600: 10 s of real lag
    ("replica_broken", {("replication_broken", "db-primary.internal:3306", "critical")}),
    ("replica_io_connecting", {("replication_stopped", "db-primary.internal:3306", "critical")}),
    ("replica_multi_source", {("replication_lag", "analytics", "warning")}),
    ("slave_57_stopped", {("replication_stopped", "10.0.0.5:3306", "critical")}),
])
def test_mysql_shapes(scenario, expected):
    found, result = _run(MYSQL8, MYSQL8[scenario])
    assert found == expected


def test_delayed_replica_lag_is_net_of_its_delay():
    _, result = _run(MYSQL8, MYSQL8["replica_delayed"])
    assert [(s.metric, s.value) for s in result.samples] == [("replication_lag_seconds", 10.0)]


def test_mariadb_recorded_delayed_replica_is_not_lagging():
    found, result = _run(MARIADB, MARIADB["replica_delayed"], thresholds={"lag_warning_s": 1})
    assert found == set()
    assert result.samples[0].value == 0.0
    status = replication.replica_status(MARIADB["replica_delayed"][0])
    assert status["sql_delay"] == 4 and status["gtid_applied"]


def test_mariadb_recorded_stopped_and_broken():
    found, result = _run(MARIADB, MARIADB["replica_stopped"])
    [(check, obj, severity)] = found
    assert (check, severity) == ("replication_stopped", "critical") and obj.startswith("127.0.0.1:")
    assert result.samples == []  # Seconds_Behind_Master is NULL with the SQL thread stopped
    found, result = _run(MARIADB, MARIADB["replica_broken"])
    assert {c for c, _, _ in found} == {"replication_broken"}
    assert "Duplicate entry" in result.findings[0].details["last_sql_error"]


def test_lag_thresholds_are_overridable():
    found, _ = _run(MYSQL8, MYSQL8["replica_lagging"], thresholds={"lag_critical_s": 600})
    assert found == {("replication_lag", "db-primary.internal:3306", "warning")}


def test_aurora_reader_lag():
    snap = {"replica": [], "aurora": MYSQL8["aurora_replica_host_status"]}
    result = replication.transform([snap], ctx_for(replication.SPEC, MYSQL8, engine="aurora-mysql"))
    assert {(f.check, f.object, f.severity.value) for f in result.findings} == {
        ("replication_lag", "prod-aurora-reader-2", "warning")}
    assert {s.object: s.value for s in result.samples} == {"prod-aurora-reader-1": 0.0185, "prod-aurora-reader-2": 45.0}
