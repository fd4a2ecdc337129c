"""Recurring time intervals (Alertmanager's time_intervals): weekdays, times, days of month,
months, years, in a time zone. Used as mute_time_intervals / active_time_intervals on routes."""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}  # monday=0
MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}


# Per field: names accepted besides numbers, and the numeric bounds (validation and matching).
RANGES: dict[str, tuple[dict[str, int] | None, int, int]] = {
    "weekdays": (WEEKDAYS, 0, 6), "months": (MONTHS, 1, 12), "days_of_month": (None, -31, 31),
    "years": (None, 1, 9999),
}


def _parse_range(text: str, names: dict[str, int] | None, lo: int, hi: int) -> tuple[int, int]:
    def one(part: str) -> int:
        part = part.strip().lower()
        if names and part in names:
            return names[part]
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a valid value here") from None
        if not (lo <= value <= hi) or value == 0 and lo < 0:
            raise ValueError(f"{value} is outside {lo}..{hi}")
        return value

    start, _, end = str(text).partition(":")
    a = one(start)
    b = one(end) if end else a
    return a, b


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_time: str
    end_time: str

    @field_validator("start_time", "end_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d|24:00", v):
            raise ValueError(f"{v!r} is not HH:MM (00:00..24:00)")
        return v

    def minutes(self) -> tuple[int, int]:
        def m(v: str) -> int:
            h, mm = v.split(":")
            return int(h) * 60 + int(mm)
        return m(self.start_time), m(self.end_time)


class TimeInterval(BaseModel):
    """One recurring window; every field given must match (empty field = any)."""

    model_config = ConfigDict(extra="forbid")
    weekdays: list[str] = Field(default_factory=list)
    times: list[TimeRange] = Field(default_factory=list)
    days_of_month: list[str] = Field(default_factory=list)
    months: list[str] = Field(default_factory=list)
    years: list[str] = Field(default_factory=list)
    location: str = "UTC"

    @field_validator("weekdays", "days_of_month", "months", "years", mode="before")
    @classmethod
    def _strings(cls, v: list) -> list[str]:
        return [str(x) for x in v]

    @field_validator("weekdays", "months", "days_of_month", "years")
    @classmethod
    def _ranges(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for item in v:
            _parse_range(item, *RANGES[info.field_name])
        return v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    def contains(self, when: datetime) -> bool:
        t = when.astimezone(ZoneInfo(self.location))
        if self.weekdays and not _in_ranges(t.weekday(), self.weekdays, *RANGES["weekdays"]):
            return False
        if self.months and not _in_ranges(t.month, self.months, *RANGES["months"]):
            return False
        if self.years and not _in_ranges(t.year, self.years, *RANGES["years"]):
            return False
        if self.days_of_month and not _day_matches(t, self.days_of_month):
            return False
        if self.times:
            minute = t.hour * 60 + t.minute
            return any(a <= minute < b for a, b in (r.minutes() for r in self.times))
        return True


def _in_ranges(value: int, items: list[str], names: dict[str, int] | None, lo: int, hi: int) -> bool:
    return any(a <= value <= b for a, b in (_parse_range(i, names, lo, hi) for i in items))


def _day_matches(t: datetime, items: list[str]) -> bool:
    """Negative days count from the end of the month (-1 = last day), as in Alertmanager."""
    last = calendar.monthrange(t.year, t.month)[1]
    for item in items:
        a, b = _parse_range(item, *RANGES["days_of_month"])
        a = a if a > 0 else last + 1 + a
        b = b if b > 0 else last + 1 + b
        if a <= t.day <= b:
            return True
    return False


class NamedTimeInterval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    time_intervals: list[TimeInterval]

    def contains(self, when: datetime) -> bool:
        return any(ti.contains(when) for ti in self.time_intervals)


def any_active(names: list[str], intervals: dict[str, NamedTimeInterval], when: datetime) -> bool:
    return any(intervals[n].contains(when) for n in names if n in intervals)


