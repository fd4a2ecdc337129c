"""Recurring time intervals, table-driven (T0 family: Monday 2026-11-23 10:00 UTC)."""

from datetime import datetime, timezone

import pytest

from app.alerting.timeintervals import TimeInterval


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=timezone.utc)


CASES = [
    ({"weekdays": ["saturday:sunday"]}, at(28, 12), True),
    ({"weekdays": ["saturday:sunday"]}, at(23, 12), False),
    ({"weekdays": ["monday:friday"], "times": [{"start_time": "09:00", "end_time": "17:00"}]}, at(23, 16, 59), True),
    ({"weekdays": ["monday:friday"], "times": [{"start_time": "09:00", "end_time": "17:00"}]}, at(23, 17), False),
    ({"times": [{"start_time": "22:00", "end_time": "24:00"}]}, at(23, 23, 30), True),
    ({"days_of_month": ["-1"]}, at(30, 1), True),  # the last day of November
    ({"days_of_month": ["1:7"]}, at(8, 1), False),
    ({"months": ["december"]}, at(23, 1), False),
    ({"months": ["november:december"], "years": ["2026"]}, at(23, 1), True),
    # 10:00 UTC is 11:00 in Berlin (CET)
    ({"times": [{"start_time": "11:00", "end_time": "12:00"}], "location": "Europe/Berlin"}, at(23, 10), True),
    ({"times": [{"start_time": "10:00", "end_time": "11:00"}], "location": "Europe/Berlin"}, at(23, 10), False),
]


@pytest.mark.parametrize("spec,when,expected", CASES)
def test_contains(spec, when, expected):
    assert TimeInterval.model_validate(spec).contains(when) is expected


@pytest.mark.parametrize("spec", [{"weekdays": ["funday"]}, {"months": ["13"]}, {"days_of_month": ["0"]},
                                  {"location": "Mars/Olympus"}, {"times": [{"start_time": "9:00", "end_time": "10:00"}]}])
def test_invalid(spec):
    with pytest.raises(ValueError):
        TimeInterval.model_validate(spec)
