"""The PostgreSQL health collector: transform on recorded rows, then against the real server."""

from __future__ import annotations

from typing import Any

import pytest

from collectors.engines import connect
from collectors.engines.base import Target
from collectors.postgres import health
from collectors.runner import run_collector
from collectors.spec import Context, Severity
from tests.collectors.spec_context import spec_context


def row(**over: Any) -> dict[str, Any]:
    """One row as the health SQL returns it on a healthy PG 15 with pg_stat_statements ready."""
    base = {"datname": "app", "xid_age": 1_200_000, "version": "15.20", "uptime_s": 86_400, "standby": False,
            "connections": 12, "max_connections": 100, "reserved_connections": 3, "pgss_installed": True,
            "pgss_loaded": True, "current_db": "app"}
    return {**base, **over}


def ctx(**thresholds: Any) -> Context:
    return spec_context(health.SPEC, instance="pg1", engine="postgres", server_version=150020, thresholds=thresholds)


def by_check(result) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in result.findings:
        out.setdefault(f.check, []).append(f)
    return out


def test_clean_rows_give_no_findings_and_the_samples():
    result = health.transform([row(), row(datname="postgres", xid_age=900)], ctx())
    assert result.findings == []
    samples = {(s.metric, s.object): s.value for s in result.samples}
    assert samples[("up", "")] == 1.0
    assert samples[("uptime_seconds", "")] == 86_400
    assert samples[("connections_used", "")] == 12
    assert samples[("connections_max", "")] == 100
    assert samples[("xid_age", "app")] == 1_200_000 and samples[("xid_age", "postgres")] == 900


# usable = max_connections - reserved = 97; 80% of 97 = 77.6, 95% = 92.15
@pytest.mark.parametrize("connections, severity", [
    (77, None), (78, Severity.warning), (92, Severity.warning), (93, Severity.critical), (97, Severity.critical),
])
def test_connections_near_limit(connections: int, severity: Severity | None):
    found = by_check(health.transform([row(connections=connections)], ctx())).get("connections_near_limit", [])
    if severity is None:
        assert found == []
        return
    [f] = found
    assert f.severity is severity and f.object == "server"
    assert f.title == f"{connections} of 97 usable connections in use ({100 * connections / 97:.0f}%)"
    assert f.details["max_connections"] == 100 and f.details["superuser_reserved_connections"] == 3
    assert "pg_stat_activity" in f.details["sql"]
    assert "PgBouncer" in f.recommendation


def test_connection_thresholds_come_from_the_context():
    assert by_check(health.transform([row(connections=50)], ctx(connections_warning_pct=50)))[
        "connections_near_limit"][0].severity is Severity.warning
    assert "connections_near_limit" not in by_check(
        health.transform([row(connections=90)], ctx(connections_warning_pct=99, connections_critical_pct=100)))


@pytest.mark.parametrize("age, severity", [
    (499_999_999, None), (500_000_000, Severity.warning), (999_999_999, Severity.warning),
    (1_000_000_000, Severity.critical), (2_000_000_000, Severity.critical),
])
def test_xid_wraparound_per_database(age: int, severity: Severity | None):
    rows = [row(datname="app", xid_age=age), row(datname="postgres", xid_age=1000)]
    found = by_check(health.transform(rows, ctx())).get("xid_wraparound", [])
    if severity is None:
        assert found == []
        return
    [f] = found
    assert (f.object, f.severity) == ("app", severity)
    assert f"{age:,}" in f.title and "Database app" in f.title
    assert f.details["datfrozenxid_age"] == age and f.details["wraparound_at"] == 2**31
    assert "VACUUM (FREEZE" in f.recommendation


@pytest.mark.parametrize("installed, loaded, missing", [
    (False, True, ["extension not created in app"]),
    (True, False, ["not in shared_preload_libraries"]),
    (False, False, ["not in shared_preload_libraries", "extension not created in app"]),
])
def test_pg_stat_statements_missing_gives_the_enable_steps(installed: bool, loaded: bool, missing: list[str]):
    [f] = by_check(health.transform([row(pgss_installed=installed, pgss_loaded=loaded)], ctx()))[
        "pg_stat_statements_missing"]
    assert f.severity is Severity.info and f.object == "app"
    assert f.details["missing"] == missing
    assert "shared_preload_libraries" in f.recommendation
    assert "Restart" in f.recommendation
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" in f.recommendation


def test_object_names_are_stable_across_runs():
    """The fingerprint is (instance, check, object): objects must not carry the changing numbers."""
    a = health.transform([row(connections=96, xid_age=1_500_000_000, pgss_loaded=False)], ctx())
    b = health.transform([row(connections=90, xid_age=1_600_000_000, pgss_loaded=False)], ctx())
    assert [(f.check, f.object) for f in a.findings] == [(f.check, f.object) for f in b.findings]
    assert len(a.findings) == 3


async def test_against_the_real_server(target_db):
    name = await target_db()
    conn = await connect(Target(name="t", engine="postgres", host="127.0.0.1", port=5432, dbname=name,
                                user="postgres"))
    try:
        result = await run_collector(health.SPEC, conn, spec_context(health.SPEC, instance="t", engine="postgres",
                                                                 thresholds=health.THRESHOLDS))
    finally:
        await conn.close()
    samples = {(s.metric, s.object): s.value for s in result.samples}
    assert samples[("up", "")] == 1.0
    assert samples[("connections_used", "")] >= 1
    assert samples[("uptime_seconds", "")] > 0
    assert (("xid_age", name)) in samples and ("xid_age", "postgres") in samples
    checks = by_check(result)
    # The machine's server does not preload pg_stat_statements and this fresh database lacks it.
    [pgss] = checks["pg_stat_statements_missing"]
    assert pgss.object == name and f"extension not created in {name}" in pgss.details["missing"]
    assert "xid_wraparound" not in checks


async def test_real_server_with_a_low_threshold_reports_connections(target_db):
    name = await target_db()
    conn = await connect(Target(name="t", engine="postgres", host="127.0.0.1", port=5432, dbname=name,
                                user="postgres"))
    try:
        result = await run_collector(health.SPEC, conn, spec_context(health.SPEC, 
            instance="t", engine="postgres",
            thresholds={**health.THRESHOLDS, "connections_warning_pct": 0, "xid_age_warning": 0}))
    finally:
        await conn.close()
    checks = by_check(result)
    assert checks["connections_near_limit"][0].severity is Severity.warning
    assert name in {f.object for f in checks["xid_wraparound"]}
