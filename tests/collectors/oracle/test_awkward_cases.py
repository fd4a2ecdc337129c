"""Awkward Oracle cases on recorded values: LONG HIGH_VALUE texts, Data Guard interval strings,
stale TIME_COMPUTED, NULL lag values, partition plans for ADD vs SPLIT, UNLIMITED limits."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from collectors.oracle import health, partitions, replication
from tests.collectors.spec_context import spec_context

NOW = datetime(2025, 6, 15, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, expected", [
    ("TO_DATE(' 2024-01-01 00:00:00', 'SYYYY-MM-DD HH24:MI:SS', 'NLS_CALENDAR=GREGORIAN')", datetime(2024, 1, 1)),
    ("TO_DATE(' 2025-03-15 06:30:00', 'SYYYY-MM-DD HH24:MI:SS', 'NLS_CALENDAR=GREGORIAN')", datetime(2025, 3, 15, 6, 30)),
    ("TIMESTAMP' 2024-01-01 00:00:00'", datetime(2024, 1, 1)),
    ("TIMESTAMP' 2024-07-01 00:00:00.000000'", datetime(2024, 7, 1)),
    ("MAXVALUE", "MAXVALUE"),
    ("100000", None),                       # a NUMBER key: not a date range
    ("TO_DATE('2024-01-01', 'YYYY-MM-DD')", datetime(2024, 1, 1)),
    (None, None),
])
def test_parse_high_value(text, expected):
    assert partitions.parse_high_value(text) == expected


@pytest.mark.parametrize("text, seconds", [
    ("+00 00:00:05", 5.0), ("+00 00:07:12", 432.0), ("+01 02:00:00", 93600.0),
    ("+00 00:00:00", 0.0), ("-00 00:00:02", -2.0), (None, None), ("", None), ("garbage", None),
])
def test_interval_seconds(text, seconds):
    assert replication.interval_seconds(text) == seconds


def _stats(transport, apply, computed_age=2, datum_age=3):
    return [{"kind": "standby", "name": n, "value": v, "time_computed": "06/15/2025 11:59:58",
             "datum_time": "06/15/2025 11:59:57", "computed_age_s": computed_age, "datum_age_s": datum_age,
             "db_unique_name": "STBY"} for n, v in (("transport lag", transport), ("apply lag", apply))]


@pytest.mark.parametrize("rows, checks", [
    (_stats("+00 00:00:01", "+00 00:00:02"), set()),
    (_stats("+00 00:00:01", "+00 00:01:00"), {"replication_lag"}),
    (_stats(None, None), {"replication_stopped"}),                         # no redo received at all
    (_stats("+00 00:00:01", "+00 00:00:01", computed_age=900), {"replication_stopped"}),  # stale figures
    (_stats("+00 00:00:01", "+00 00:00:01", datum_age=3600), {"replication_stopped"}),
])
def test_standby_findings(rows, checks):
    result = replication.transform(rows, spec_context(replication.SPEC, "o", "oracle", now=NOW))
    assert {f.check for f in result.findings} == checks


def _range_table(last_is_max: bool) -> partitions.RangeTable:
    t = partitions.RangeTable("APP", "T", "DATE", None)
    t.partitions = [("P_20250501", datetime(2025, 6, 1), 10), ("P_20250601", datetime(2025, 7, 1), 5)]
    if last_is_max:
        t.partitions.append(("PMAX", "MAXVALUE", 0))
    return t


def test_add_partition_plan_without_maxvalue():
    plan = partitions.plan_premake(_range_table(False), NOW, 2)
    assert plan == [
        "ALTER TABLE \"APP\".\"T\" ADD PARTITION \"P_20250701\" VALUES LESS THAN "
        "(TO_DATE('2025-08-01 00:00:00', 'YYYY-MM-DD HH24:MI:SS'))",
        "ALTER TABLE \"APP\".\"T\" ADD PARTITION \"P_20250801\" VALUES LESS THAN "
        "(TO_DATE('2025-09-01 00:00:00', 'YYYY-MM-DD HH24:MI:SS'))",
    ]


def test_split_plan_with_maxvalue_and_timestamp_key():
    t = _range_table(True)
    t.key_type = "TIMESTAMP(6)"
    plan = partitions.plan_premake(t, NOW, 1)
    assert plan == ["ALTER TABLE \"APP\".\"T\" SPLIT PARTITION \"PMAX\" AT (TIMESTAMP '2025-08-01 00:00:00') "
                    "INTO (PARTITION \"P_20250701\", PARTITION \"PMAX\") UPDATE INDEXES"]


def test_retention_never_drops_the_last_partition():
    t = _range_table(False)
    assert partitions.expired_partitions(t, datetime(2030, 1, 1, tzinfo=timezone.utc), 30) == ["P_20250501"]


def test_unlimited_resource_limit_is_not_a_finding():
    rows = [{"resource_name": "sessions", "current_utilization": 5000, "max_utilization": 5000,
             "limit_value": "UNLIMITED", "uptime_s": 10}]
    assert health.transform(rows, spec_context(health.SPEC, "o", "oracle")).findings == []
