"""health transform on recorded MySQL 8 and MariaDB rows."""

from __future__ import annotations

import copy

from collectors.mysql import health

from .conftest import ctx_for, recorded


def _checks(result):
    return {(f.check, f.object, f.severity.value) for f in result.findings}


def test_samples_from_both_flavours(flavour):
    result = health.transform([flavour["health"]], ctx_for(health.SPEC, flavour))
    metrics = {s.metric: s.value for s in result.samples}
    assert metrics["up"] == 1.0
    assert metrics["uptime_seconds"] > 0
    assert metrics["connections_max"] >= metrics["connections_used"] > 0


def test_connections_near_limit_warns_at_90_percent_on_mysql8():
    data = recorded("mysql_8_0")  # 181 of 200
    result = health.transform([data["health"]], ctx_for(health.SPEC, data))
    assert _checks(result) == {("connections_near_limit", "server", "warning")}
    assert result.findings[0].details["used_pct"] == 90.5


def test_connections_critical_threshold_overridable():
    data = recorded("mysql_8_0")
    result = health.transform([data["health"]], ctx_for(health.SPEC, data, thresholds={"connections_critical_pct": 90}))
    assert _checks(result) == {("connections_near_limit", "server", "critical")}


def test_recorded_mariadb_primary_is_healthy():
    data = recorded("mariadb_10_11")
    assert health.transform([data["health"]], ctx_for(health.SPEC, data)).findings == []


def test_writable_replica_flagged_with_each_flavours_fix():
    for name, fix in (("mariadb_10_11", "SET GLOBAL read_only = ON"), ("mysql_8_0", "SET GLOBAL super_read_only = ON")):
        data = recorded(name)
        result = health.transform([data["health"]], ctx_for(health.SPEC, data, is_standby=True, thresholds={"connections_warning_pct": 100}))
        assert _checks(result) == {("replica_not_read_only", "server", "warning")}
        assert fix in result.findings[0].recommendation


def test_read_only_replica_is_fine():
    data = recorded("mysql_8_0")
    snap = copy.deepcopy(data["health"])
    snap["settings"][0].update(read_only=1, super_read_only=1)
    result = health.transform([snap], ctx_for(health.SPEC, data, is_standby=True, thresholds={"connections_warning_pct": 100}))
    assert result.findings == []
