"""Planted problems on recorded Oracle rows yield exactly the expected checks; a healthy primary
and standby yield none. The Oracle counterpart of the PostgreSQL planted-problem database
(missing_index has no counterpart: Oracle's advice for it is the licensed SQL Tuning Advisor)."""

from __future__ import annotations

import pytest

from collectors.oracle import health, index_advice, partitions, query_stats, replication
from tests.collectors.spec_context import spec_context

from .conftest import context

MODULES = {"query_stats": query_stats, "index_advice": index_advice, "partitions": partitions,
           "replication": replication, "health": health}

PLANTED = {
    "query_stats": {("slow_query", "7h35uxf5uhmm1"), ("query_regression", "0w2qpuc6u2zsp:1388734953")},
    "index_advice": {("unused_index", "APP.ORDERS_STATUS_IX"), ("duplicate_index", "APP.ORDERS_CUST_IX"),
                     ("fk_without_index", "APP.ORDER_LINES.ORDER_LINES_ORDERS_FK")},
    "partitions": {("missing_future_partitions", "APP.EVENTS"), ("catchall_partition_rows", "APP.EVENTS"),
                   ("partition_retention_due", "APP.EVENTS")},
    "replication": {("replication_lag", "ORCL_STBY1"), ("replication_stopped", "ORCL_STBY2")},
    "health": {("connections_near_limit", "processes")},
}


@pytest.mark.parametrize("collector", sorted(PLANTED))
def test_planted_problems_yield_exactly_the_expected_findings(planted, collector):
    result = MODULES[collector].transform(planted[collector]["rows"], context(planted, collector))
    assert {(f.check, f.object) for f in result.findings} == PLANTED[collector]
    for f in result.findings:
        assert f.title and f.recommendation and f.details.get("sql"), f


@pytest.mark.parametrize("collector", sorted(MODULES))
def test_clean_instance_yields_no_findings(clean, collector):
    assert MODULES[collector].transform(clean[collector]["rows"], context(clean, collector)).findings == []


@pytest.mark.parametrize("collector", sorted(MODULES))
def test_transform_accepts_no_rows(collector):
    assert MODULES[collector].transform([], spec_context(MODULES[collector].SPEC, "i", "oracle")).findings == []


def test_interval_partitioned_table_is_skipped_with_a_reason(planted):
    result = partitions.transform(planted["partitions"]["rows"], context(planted, "partitions"))
    assert "interval partitioned" in result.state["skipped"]["APP.AUDIT_TRAIL"]
    assert all(f.object != "APP.AUDIT_TRAIL" for f in result.findings)


def test_young_index_is_not_called_unused(planted):
    result = index_advice.transform(planted["index_advice"]["rows"], context(planted, "index_advice"))
    assert "APP.ORDERS_OLD_REPORT_IX" not in {f.object for f in result.findings}  # created 14 days ago


def test_severities(planted):
    sev = {(f.check, f.object): f.severity.value for name, m in MODULES.items()
           for f in m.transform(planted[name]["rows"], context(planted, name)).findings}
    assert sev[("replication_lag", "ORCL_STBY1")] == "critical"   # apply lag 7 min 12 s
    assert sev[("replication_stopped", "ORCL_STBY2")] == "critical"
    assert sev[("connections_near_limit", "processes")] == "critical"  # 290 of 300
