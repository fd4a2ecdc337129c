"""The partition arithmetic every engine's planner shares (PostgreSQL's DST cases are in
tests/collectors/postgres/test_partitions.py, on the same add_step)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from collectors.common.partition_maths import (
    Step,
    add_step,
    future_bounds,
    infer_step,
    keep_table,
    next_bound,
    retention_days,
)


@pytest.mark.parametrize(("value", "step", "times", "expected"), [
    (datetime(2026, 1, 1), Step(months=1), 1, datetime(2026, 2, 1)),
    (datetime(2026, 11, 1), Step(months=3), 1, datetime(2027, 2, 1)),
    (datetime(2026, 1, 31), Step(months=1), 1, datetime(2026, 2, 28)),   # clamped, not an error
    (datetime(2026, 3, 1), Step(days=7), 2, datetime(2026, 3, 15)),
    (1000, Step(width=500), 3, 2500),
])
def test_add_step_on_naive_bounds(value, step: Step, times: int, expected):
    assert add_step(value, step, times) == expected


def test_add_step_keeps_local_midnight_across_a_dst_change():
    berlin = ZoneInfo("Europe/Berlin")
    oct1 = datetime(2026, 10, 1, tzinfo=berlin).astimezone(timezone.utc)
    nov1 = add_step(oct1, Step(months=1), zone=berlin)
    assert nov1.astimezone(berlin) == datetime(2026, 11, 1, tzinfo=berlin)
    assert nov1 - oct1 == timedelta(days=31, hours=1)   # the month had a 25-hour day


@pytest.mark.parametrize(("bounds", "step"), [
    ([datetime(2026, 1, 1), datetime(2026, 2, 1)], ("month", 1)),
    ([datetime(2026, 1, 1), datetime(2026, 4, 1)], ("month", 3)),
    ([datetime(2026, 1, 1), datetime(2026, 1, 8)], ("day", 7)),
    ([datetime(2026, 1, 1), datetime(2026, 1, 1, 12)], None),
    ([datetime(2026, 1, 1)], None),
])
def test_infer_step_and_next_bound(bounds, step):
    assert infer_step(bounds) == step
    if step is not None:
        assert next_bound(bounds[-1], step) - bounds[-1] >= bounds[-1] - bounds[-2] - timedelta(days=3)


def test_future_bounds_makes_premake_bounds_after_now():
    bounds = [datetime(2026, 1, 1), datetime(2026, 2, 1)]
    out = future_bounds(bounds, ("month", 1), datetime(2026, 2, 15), premake=3)
    assert out == [datetime(2026, 3, 1), datetime(2026, 4, 1), datetime(2026, 5, 1)]


@pytest.mark.parametrize(("policy", "days"), [
    ({}, None), ({"retention_days": 30}, 30), ({"retention": "90 days"}, 90), ({"retention": "6 months"}, 186),
    ({"retention": "1 year"}, 366), ({"retention": "2 weeks"}, 14),
])
def test_retention_days_rounds_calendar_units_up(policy, days):
    assert retention_days(policy) == days


@pytest.mark.parametrize("text", ["3 fortnights", "many days", "90"])
def test_retention_text_that_cannot_be_read_is_refused(text):
    with pytest.raises(ValueError, match="retention"):
        retention_days({"retention": text})


@pytest.mark.parametrize(("value", "kept"), [(True, True), (0, False), ("yes", True), ("off", False), (None, None)])
def test_keep_table_spellings(value, kept):
    if kept is None:
        with pytest.raises(ValueError, match="keep_table"):
            keep_table({"keep_table": value})
    else:
        assert keep_table({"keep_table": value}) is kept
