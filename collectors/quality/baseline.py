"""A table's usual volume for this hour: its own past periods at the same hour of the week.

Loads follow the clock (a nightly batch, weekday traffic), so a period is compared with the same
hour of the same weekday first; with too few of those, with the same hour on any day; with too
few of those, with every past period. Fewer than `min_history` points: no verdict yet.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Baseline:
    mean: float
    stdev: float
    points: int
    basis: str  # "hour of week", "hour of day", "all periods"


def baseline_for(history: Sequence[tuple[datetime, float]], now: datetime, min_history: int) -> Baseline | None:
    """The baseline `now`'s period is judged by, from (period end, rows) points before it."""
    past = [(ts, v) for ts, v in history if ts < now]
    same_week_hour = [v for ts, v in past if ts.weekday() == now.weekday() and ts.hour == now.hour]
    same_hour = [v for ts, v in past if ts.hour == now.hour]
    for basis, values in (("hour of week", same_week_hour), ("hour of day", same_hour),
                          ("all periods", [v for _, v in past])):
        if len(values) >= min_history:
            return Baseline(statistics.fmean(values), statistics.pstdev(values), len(values), basis)
    return None


def deviation(value: float, base: Baseline) -> float:
    """How many standard deviations value is from the mean; the spread is floored at 5 % of the
    mean (and 1 row) so a perfectly regular load does not flag a one-row difference."""
    spread = max(base.stdev, 0.05 * abs(base.mean), 1.0)
    return (value - base.mean) / spread if math.isfinite(value) else math.inf
