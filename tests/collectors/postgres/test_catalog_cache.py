"""The catalog fingerprint cache and the slow parts' schedule, on states as a run leaves them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from collectors.postgres.catalog_cache import (
    cached,
    fingerprint_sql,
    keep,
    part_due,
    part_kept,
    part_rows,
)
from collectors.spec import Context

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def ctx(previous, **thresholds) -> Context:
    return Context("i", "postgres", thresholds=thresholds, previous=previous, now=NOW)


def test_fingerprint_sql_reads_count_and_xmin_sum_of_each_catalog():
    sql = fingerprint_sql("pg_class", "pg_index")
    assert sql.count("sum(xmin::text::bigint)") == 2 and "from pg_class" in sql and "from pg_index" in sql


@pytest.mark.parametrize("previous, fp, expected", [
    (None, "1:2", None),                                        # first run: nothing kept
    ({"catalog": keep("1:2", '{"index": []}')}, "1:2", {"index": []}),
    ({"catalog": keep("1:2", '{"index": []}')}, "1:3", None),    # DDL since: read again
    ({"catalog": {"fp": "1:2"}}, "1:2", None),                   # a malformed entry is no cache
])
def test_cached_definitions_only_at_the_same_fingerprint(previous, fp, expected):
    assert cached(previous, "catalog", fp) == expected


@pytest.mark.parametrize("entry, interval, due", [
    (None, 3600, True),
    ({"at": NOW.timestamp() - 60, "json": "[]"}, 3600, False),
    ({"at": NOW.timestamp() - 3600, "json": "[]"}, 3600, True),
    ({"at": NOW.timestamp() - 1, "json": "[]"}, 0, True),       # 0: every run
    ({"at": NOW.timestamp() - 60}, 3600, True),                 # rows missing: run it
])
def test_a_slow_part_is_due_once_its_interval_passed(entry, interval, due):
    previous = {"capacity": entry} if entry is not None else {}
    assert part_due(ctx(previous, capacity_interval_s=interval), "capacity", "capacity_interval_s") is due


def test_a_part_not_run_keeps_its_rows_and_time_a_part_run_is_stamped_now():
    previous = {"capacity": {"at": 100.0, "json": json.dumps([{"kind": "sequence"}])}}
    c = ctx(previous)
    assert part_kept(c, "capacity", None) == previous["capacity"]
    assert part_rows(c, "capacity") == [{"kind": "sequence"}]
    fresh = part_kept(c, "capacity", [{"kind": "table_bloat", "size_bytes": 1}])
    assert fresh["at"] == NOW.timestamp() and json.loads(fresh["json"]) == [{"kind": "table_bloat", "size_bytes": 1}]
