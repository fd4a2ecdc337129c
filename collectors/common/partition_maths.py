"""Partition interval arithmetic and policy reading: steps between bounds, premake, retention windows.

add_step is the one calendar arithmetic every engine's planner uses (PostgreSQL's DST-aware one:
months and days on the calendar the bounds were cut in, seconds as elapsed time).
"""

from __future__ import annotations

import calendar
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from collectors.common.rows import DAY_S

# --- partition interval arithmetic ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Step:
    """A partition width: calendar months + wall-clock days + seconds, or an integer width."""

    months: int = 0
    days: int = 0
    seconds: int = 0
    width: int = 0

    def describe(self) -> str:
        if self.width:
            return str(self.width)
        parts = [f"{n} {u}" for n, u in ((self.months, "months"), (self.days, "days"), (self.seconds, "seconds")) if n]
        return " ".join(parts) or "0"


def add_step(value: datetime | int, step: Step, times: int = 1, zone: tzinfo | None = None) -> datetime | int:
    """value + step*times: months and days on the calendar of `zone` (the zone the bounds were cut
    in; the value's own when None), seconds as elapsed time. The result keeps the value's tzinfo."""
    if isinstance(value, int):
        return value + step.width * times
    shown = value.tzinfo
    wall = (value.astimezone(zone) if zone is not None and shown is not None else value).replace(tzinfo=None)
    months = wall.month - 1 + step.months * times
    year, month = wall.year + months // 12, months % 12 + 1
    day = min(wall.day, calendar.monthrange(year, month)[1])
    wall = wall.replace(year=year, month=month, day=day) + timedelta(days=step.days * times)
    seconds = timedelta(seconds=step.seconds * times)
    if shown is None:
        return wall + seconds
    # zoneinfo gives the local midnight its own offset: +02 before the October change, +01 after.
    instant = _as_postgres_reads(wall, zone or shown).astimezone(timezone.utc)
    return (instant + seconds).astimezone(shown)


def _as_postgres_reads(wall: datetime, zone: tzinfo) -> datetime:
    """A wall-clock time in zone as PostgreSQL reads the literal: one skipped or repeated by a DST
    change (midnight in Cuba or Chile) takes the smaller of its two UTC offsets (docs, appendix B.1).
    Only PostgreSQL's timestamptz bounds carry a zone; the other engines' bounds are naive."""
    first, second = wall.replace(tzinfo=zone), wall.replace(tzinfo=zone, fold=1)
    return first if first.utcoffset() <= second.utcoffset() else second



def infer_step(bounds: Sequence[datetime]) -> tuple[str, int] | None:
    """('month', n) when the bounds fall on the 1st n months apart, else ('day', n); None if unclear."""
    if len(bounds) < 2:
        return None
    last, prev = bounds[-1], bounds[-2]
    if last.day == prev.day == 1 and last.time() == prev.time():
        months = (last.year - prev.year) * 12 + last.month - prev.month
        if months > 0:
            return ("month", months)
    days = (last - prev).total_seconds() / DAY_S
    return ("day", int(days)) if days >= 1 and days == int(days) else None


def next_bound(bound: datetime, step: tuple[str, int]) -> datetime:
    """The bound one step after `bound`; month steps are only inferred between bounds on the 1st."""
    unit, n = step
    return add_step(bound, Step(months=n) if unit == "month" else Step(days=n))


def future_bounds(bounds: Sequence[datetime], step: tuple[str, int], now: datetime, premake: int) -> list[datetime]:
    """The bounds to add after the last one so that `premake` bounds lie after now."""
    out, bound = [], bounds[-1]
    ahead = sum(1 for b in bounds if b > now)
    while ahead < premake:
        bound = next_bound(bound, step)
        out.append(bound)
        if bound > now:
            ahead += 1
    return out


def policy_for(table: str, thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """Per-table partition policy: defaults overridden by the first matching `policies` pattern."""
    policy = {"premake": thresholds.get("premake", 4), "retention_days": thresholds.get("retention_days"),
              "keep_table": thresholds.get("keep_table", False)}
    for pattern, override in (thresholds.get("policies") or {}).items():
        if fnmatch.fnmatch(table.lower(), pattern.lower()):
            policy.update(override)
            break
    return policy


# --- the partition policy as app/partitions.py hands it over (PostgreSQL's policy shape) ----------

# Calendar units in days, rounded up: a retention window is a promise to keep at least that long.
_UNIT_DAYS = {"day": 1, "week": 7, "month": 31, "quarter": 92, "year": 366}
# The spellings PostgreSQL's policy (a pydantic bool) accepts, so one policy means the same everywhere.
_TRUE, _FALSE = ("1", "on", "t", "true", "y", "yes"), ("0", "off", "f", "false", "n", "no")


def retention_days(policy: Mapping[str, Any]) -> int | None:
    """A policy's retention in whole days, from retention_days or a retention text ('90 days')."""
    if policy.get("retention_days") is not None:
        return int(policy["retention_days"])
    text = policy.get("retention")
    if text is None or isinstance(text, int):
        return text
    number, _, unit = str(text).strip().partition(" ")
    days = _UNIT_DAYS.get(unit.rstrip("s").lower())
    if not number.isdigit() or days is None:
        raise ValueError(f"retention {text!r}: use e.g. '90 days', '6 months' or '1 year'")
    return int(number) * days


def keep_table(policy: Mapping[str, Any]) -> bool:
    """A policy's keep_table: a bool, 0/1, or true/false, yes/no, on/off; False when absent."""
    value = policy.get("keep_table", False)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"keep_table {value!r}: use true or false")
