"""Planted problems on recorded SQL Server rows yield exactly the expected checks; a clean
instance yields none. The SQL Server counterpart of the PostgreSQL planted-problem database."""

from __future__ import annotations

import pytest

from collectors.sqlserver import health, index_advice, partitions, query_stats, replication
from tests.collectors.spec_context import spec_context

from .conftest import context

MODULES = {"query_stats": query_stats, "index_advice": index_advice, "partitions": partitions,
           "replication": replication, "health": health}

PLANTED = {
    "query_stats": {("slow_query", "0x9F3C2A11D0B4E771"), ("query_regression", "0x1B7E00C4A9F2D3E5")},
    "index_advice": {("missing_index", "dbo.orders([customer_ref])"),
                     ("unused_index", "dbo.orders.ix_orders_status"),
                     ("duplicate_index", "dbo.orders.ix_orders_customer"),
                     ("fk_without_index", "dbo.order_lines.FK_order_lines_orders")},
    "partitions": {("missing_future_partitions", "dbo.events"), ("catchall_partition_rows", "dbo.events"),
                   ("partition_retention_due", "dbo.events")},
    "replication": {("replication_lag", "ag_sales/SQL02/sales"), ("replication_stopped", "ag_sales/SQL03/sales"),
                    ("replica_unhealthy", "ag_sales/SQL03")},
    "health": {("connections_near_limit", "server")},
}


@pytest.mark.parametrize("collector", sorted(PLANTED))
def test_planted_problems_yield_exactly_the_expected_findings(planted, collector):
    result = MODULES[collector].transform(planted[collector]["rows"], context(planted, collector))
    assert {(f.check, f.object) for f in result.findings} == PLANTED[collector]
    for f in result.findings:
        assert f.title and f.recommendation and f.details.get("sql"), f


def test_planted_check_names_match_the_postgresql_vocabulary(planted):
    checks = set()
    for collector, module in MODULES.items():
        checks |= {f.check for f in module.transform(planted[collector]["rows"], context(planted, collector)).findings}
    assert checks == {"slow_query", "query_regression", "missing_index", "unused_index", "duplicate_index",
                      "fk_without_index", "missing_future_partitions", "catchall_partition_rows",
                      "partition_retention_due", "replication_lag", "replication_stopped",
                      "replica_unhealthy", "connections_near_limit"}


@pytest.mark.parametrize("collector", sorted(MODULES))
def test_clean_instance_yields_no_findings(clean, collector):
    result = MODULES[collector].transform(clean[collector]["rows"], context(clean, collector))
    assert result.findings == []


@pytest.mark.parametrize("collector", sorted(MODULES))
def test_transform_accepts_no_rows(collector):
    assert MODULES[collector].transform([], spec_context(MODULES[collector].SPEC, "i", "sqlserver")).findings == []


def test_severities(planted):
    sev = {}
    for collector, module in MODULES.items():
        for f in module.transform(planted[collector]["rows"], context(planted, collector)).findings:
            sev[f.check] = f.severity.value
    assert sev["replication_lag"] == "critical"          # 439 s >= 300 s
    assert sev["missing_future_partitions"] == "critical"  # nothing ahead at all
    assert sev["connections_near_limit"] == "critical"     # 1920 of 2000 configured
    assert sev["unused_index"] == "warning"
