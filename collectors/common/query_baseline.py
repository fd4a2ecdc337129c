"""Statement counters to per-interval deltas and rolling baselines: the regression rule every engine uses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collectors.common.rows import DAY_S

# --- cumulative counters -> per-interval deltas, reset-safe -------------------------------------

def counter_deltas(
    current: Mapping[str, Mapping[str, float]],
    previous: Mapping[str, Mapping[str, float]] | None,
) -> dict[str, dict[str, float]]:
    """Deltas for keys seen in both snapshots whose counters all grew or stayed.

    A key missing from the previous snapshot, or any counter that went down (the plan left the
    cache and came back, statistics were flushed, the server restarted), starts a new baseline:
    no delta this time rather than a negative or huge one.
    """
    out: dict[str, dict[str, float]] = {}
    for key, now_counters in current.items():
        before = (previous or {}).get(key)
        if before is None:
            continue
        delta = {name: value - before.get(name, 0.0) for name, value in now_counters.items()}
        if any(v < 0 for v in delta.values()):
            continue
        out[key] = delta
    return out


@dataclass(frozen=True, slots=True)
class Baseline:
    """Exponentially weighted per-second rates of one statement: a long and a short horizon."""

    calls_long: float
    ms_long: float
    calls_short: float
    ms_short: float
    since: float  # epoch seconds when this statement was first measured

    @property
    def mean_ms_long(self) -> float:
        return self.ms_long / self.calls_long if self.calls_long > 0 else 0.0

    @property
    def mean_ms_short(self) -> float:
        return self.ms_short / self.calls_short if self.calls_short > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.calls_long, 9), round(self.ms_long, 6), round(self.calls_short, 9),
                round(self.ms_short, 6), self.since]


def update_baseline(old: Sequence[float] | None, calls: float, total_ms: float, interval_s: float,
                    now_s: float, long_s: float = 7 * DAY_S, short_s: float = 3600.0) -> Baseline:
    """Fold one interval into the rolling baseline (7 days long, 1 hour short by default)."""
    rate_calls, rate_ms = calls / interval_s, total_ms / interval_s
    if old is None:
        return Baseline(rate_calls, rate_ms, rate_calls, rate_ms, now_s)
    a_long = 1.0 - math.exp(-interval_s / long_s)
    a_short = 1.0 - math.exp(-interval_s / short_s)
    cl, ml, cs, ms, since = old
    return Baseline(cl + a_long * (rate_calls - cl), ml + a_long * (rate_ms - ml),
                    cs + a_short * (rate_calls - cs), ms + a_short * (rate_ms - ms), since)


def regression(base: Baseline, now_s: float, t: Mapping[str, Any]) -> dict[str, float] | None:
    """Evidence when the last hour's mean is >= factor x the long baseline, else None."""
    age_s = now_s - base.since
    calls_last_hour = base.calls_short * 3600.0
    if age_s < t["regression_min_baseline_s"] or calls_last_hour < t["regression_min_calls"]:
        return None
    if base.mean_ms_long <= 0 or base.mean_ms_short < t["regression_factor"] * base.mean_ms_long:
        return None
    if base.mean_ms_short < t["regression_min_mean_ms"]:
        return None
    return {"mean_ms_last_hour": round(base.mean_ms_short, 2), "mean_ms_baseline": round(base.mean_ms_long, 2),
            "factor": round(base.mean_ms_short / base.mean_ms_long, 2),
            "calls_last_hour": round(calls_last_hour), "baseline_age_days": round(age_s / DAY_S, 1)}


QUERY_THRESHOLDS = {
    "slow_query_ms": 100.0,
    "slow_query_min_calls": 100,
    "regression_factor": 2.0,
    "regression_min_calls": 50,
    "regression_min_mean_ms": 5.0,
    # A baseline younger than a day has not seen a daily cycle; do not judge against it.
    "regression_min_baseline_s": DAY_S,
    "baseline_max_statements": 2000,
}


def trim_baselines(baselines: dict[str, list[float]], keep: int) -> dict[str, list[float]]:
    """Keep the state compact: the statements with the most time per second over the long horizon."""
    if len(baselines) <= keep:
        return baselines
    top = sorted(baselines.items(), key=lambda kv: kv[1][1], reverse=True)[:keep]
    return dict(top)
