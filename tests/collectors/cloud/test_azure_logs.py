"""azure_logs: grouping slow statements and errors into findings, and the LogsQueryClient call
against a loopback Log Analytics endpoint."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from collectors.cloud import azure_logs
from collectors.engines.base import Target, connect
from collectors.runner import run_collector
from collectors.spec import Context, Severity
from tests.collectors.spec_context import spec_context

SUB = "0b1f6471-1bf0-4dda-aec3-111122223333"
RID = f"/subscriptions/{SUB}/resourceGroups/rg-db/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg1"
SEEN = datetime(2026, 11, 26, 11, 50, tzinfo=timezone.utc)

RECORDED = [
    {"kind": "slow", "detail": "select * from orders where customer_id = $1", "events": 40, "last_seen": SEEN,
     "max_duration_ms": 5300.0, "example": "duration: 5300.1 ms  statement: select * from orders ..."},
    {"kind": "slow", "detail": "update stock set qty = qty - 1", "events": 3, "last_seen": SEEN,
     "max_duration_ms": 1200.0, "example": "duration: 1200 ms statement: update stock ..."},
    {"kind": "error", "detail": "FATAL 28P01", "events": 120, "last_seen": SEEN, "max_duration_ms": None,
     "example": "password authentication failed for user \"app\""},
    {"kind": "error", "detail": "ERROR 42601", "events": 2, "last_seen": SEEN, "max_duration_ms": None,
     "example": "syntax error at or near \"ALTER USER x PASSWORD 'hunter2'\""},
]


def ctx() -> Context:
    c = spec_context(azure_logs.SPEC, instance="pg1", engine="postgres")
    c.extra["cloud"] = {"resource_id": RID, "workspace_id": "ws-1"}
    return c


def test_transform_groups_slow_statements_and_errors():
    result = azure_logs.transform(RECORDED, ctx())
    found = {f.check: f for f in result.findings}
    assert found["slow_queries_logged"].severity == Severity.warning
    assert found["slow_queries_logged"].details["events"] == 43
    assert found["slow_queries_logged"].details["top"][0]["max_duration_ms"] == 5300.0
    assert found["errors_logged"].severity == Severity.critical
    assert found["errors_logged"].details["top"][0]["detail"] == "FATAL 28P01"
    assert "hunter2" not in str(found["errors_logged"].details)
    assert {s.metric: s.value for s in result.samples} == {"slow_statements_logged": 43, "errors_logged": 122}


@pytest.mark.parametrize("rows", [[], RECORDED[1:2] + RECORDED[3:]])
def test_quiet_logs_give_no_findings(rows):
    assert azure_logs.transform(rows, ctx()).findings == []


def test_kql_is_per_service_and_refuses_odd_ids():
    assert "PostgreSQLLogs" in azure_logs.kql_for(RID)
    assert f"_ResourceId =~ '{RID}'" in azure_logs.kql_for(RID)
    assert azure_logs.kql_for(RID.replace("pg1", "pg1'|drop")) is None


async def test_run_queries_the_workspace(azure_monitor, azure_credential):
    azure_monitor.log_rows = [{**r, "last_seen": r["last_seen"].isoformat()} for r in RECORDED]
    target = Target(name="pg1@azure", engine="azure", host="westeurope", port=443, options={
        "resource_id": RID, "region": "westeurope", "workspace_id": "ws-1", "logs_endpoint": azure_monitor.url,
        "azure_credential": azure_credential})
    result = await run_collector(azure_logs.SPEC, await connect(target), spec_context(azure_logs.SPEC, instance="pg1", engine="postgres"))
    assert {f.check for f in result.findings} == {"slow_queries_logged", "errors_logged"}
    request = azure_monitor.requests[-1]
    assert request["path"].startswith("/v1/workspaces/ws-1/query")
    assert "PostgreSQLLogs" in request["body"]["query"]
    assert next(f for f in result.findings if f.check == "errors_logged").details["kql"] == request["body"]["query"]


async def test_no_workspace_means_nothing_to_do(azure_monitor, azure_credential):
    target = Target(name="pg1@azure", engine="azure", host="westeurope", port=443, options={
        "resource_id": RID, "region": "westeurope", "azure_credential": azure_credential})
    result = await run_collector(azure_logs.SPEC, await connect(target), spec_context(azure_logs.SPEC, instance="pg1", engine="postgres"))
    assert result.findings == [] and azure_monitor.requests == []
