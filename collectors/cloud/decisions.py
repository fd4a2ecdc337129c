"""Pure decisions on cloud metric series, shared by CloudWatch and Azure Monitor collectors.

Both collectors normalise their API answers into series of (timestamp, value) under our own
metric names, then call these functions, so "storage is running out" means the same thing on
both clouds and is tested once on recorded points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from collectors.spec import Finding, Sample, Severity

Series = Sequence[tuple[datetime, float]]

# Defaults a DBA can override per instance or tag. Storage: RDS stops accepting writes when the
# volume is full ("storage-full" state) and a storage modification can take hours, so warn two
# weeks ahead. CPU: short peaks are normal; sustained saturation over 15 minutes means queueing.
THRESHOLDS: dict[str, Any] = {
    "lookback_s": 6 * 3600,
    "period_s": 300,
    "storage_free_warning_pct": 15.0,
    "storage_free_critical_pct": 5.0,
    "days_until_full_warning": 14.0,
    "days_until_full_critical": 3.0,
    "trend_min_r2": 0.6,  # how straight the decline must be before we extrapolate it
    "cpu_warning_pct": 90.0,
    "cpu_critical_pct": 98.0,
    "cpu_sustained_s": 900,
    "replication_lag_warning_s": 60.0,
    "replication_lag_critical_s": 300.0,
}


def clean(points: Sequence[tuple[datetime, float | None]]) -> list[tuple[datetime, float]]:
    """Sorted by time, without the empty buckets some APIs return."""
    return sorted(((ts, float(v)) for ts, v in points if v is not None), key=lambda p: p[0])


def latest_samples(series: Mapping[str, Series]) -> list[Sample]:
    return [Sample(name, points[-1][1]) for name, points in sorted(series.items()) if points]


def trend_per_day(points: Series) -> tuple[float, float] | None:
    """Least-squares slope (units per day) and r² of a series; None when too short to say."""
    if len(points) < 6 or points[-1][0] - points[0][0] < timedelta(hours=1):
        return None
    t0 = points[0][0]
    xs = [(ts - t0).total_seconds() / 86400 for ts, _ in points]
    ys = [v for _, v in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    if sxx == 0:
        return None
    slope = sxy / sxx
    r2 = 1.0 if syy == 0 else sxy * sxy / (sxx * syy)
    return slope, r2


def days_until_full(free_pct: Series, min_r2: float) -> float | None:
    trend = trend_per_day(free_pct)
    if trend is None or trend[0] >= 0 or trend[1] < min_r2:
        return None
    return free_pct[-1][1] / -trend[0]


def storage_low(free_pct: Series, t: Mapping[str, Any], evidence: Mapping[str, Any],
                recommendation: str) -> Finding | None:
    """Free space below a % of allocated, or a steady decline that fills the volume soon."""
    if not free_pct:
        return None
    pct = free_pct[-1][1]
    days = days_until_full(free_pct, t["trend_min_r2"])
    critical = pct < t["storage_free_critical_pct"] or (days is not None and days < t["days_until_full_critical"])
    warning = pct < t["storage_free_warning_pct"] or (days is not None and days < t["days_until_full_warning"])
    if not (critical or warning):
        return None
    when = f", full in about {days:.1f} days at the current rate" if days is not None else ""
    return Finding(
        check="storage_low", object="storage",
        severity=Severity.critical if critical else Severity.warning,
        title=f"Only {pct:.1f}% of allocated storage is free{when}",
        details={"free_pct": round(pct, 2), "days_until_full": None if days is None else round(days, 1),
                 "points": len(free_pct), "since": free_pct[0][0].isoformat(), **evidence},
        recommendation=recommendation,
    )


def cpu_saturated(cpu: Series, t: Mapping[str, Any], evidence: Mapping[str, Any],
                  recommendation: str) -> Finding | None:
    """Every point of the last `cpu_sustained_s` at or above the threshold (not a single peak).

    The window ends at the newest point, not at `now`: cloud metrics arrive minutes late.
    """
    if not cpu:
        return None
    recent = [v for ts, v in cpu if ts > cpu[-1][0] - timedelta(seconds=t["cpu_sustained_s"])]
    if len(recent) < 2 or min(recent) < t["cpu_warning_pct"]:
        return None
    severity = Severity.critical if min(recent) >= t["cpu_critical_pct"] else Severity.warning
    minutes = t["cpu_sustained_s"] / 60
    return Finding(
        check="cpu_saturated", object="cpu", severity=severity,
        title=f"CPU at or above {min(recent):.0f}% for the last {minutes:.0f} minutes",
        details={"cpu_percent_min": round(min(recent), 1), "cpu_percent_max": round(max(recent), 1),
                 "points": len(recent), "window_s": t["cpu_sustained_s"], **evidence},
        recommendation=recommendation,
    )


def replication_lag(lag_s: Series, t: Mapping[str, Any], metric: str, evidence: Mapping[str, Any],
                    recommendation: str) -> Finding | None:
    if not lag_s:
        return None
    lag = lag_s[-1][1]
    if lag < t["replication_lag_warning_s"]:
        return None
    severity = Severity.critical if lag >= t["replication_lag_critical_s"] else Severity.warning
    return Finding(
        check="replication_lag", object=metric, severity=severity,
        title=f"Replica is {lag:.0f} s behind its source (cloud metric {metric.split(':')[-1]})",
        details={"lag_seconds": round(lag, 1), "max_in_window_s": round(max(v for _, v in lag_s), 1),
                 "warning_s": t["replication_lag_warning_s"], "critical_s": t["replication_lag_critical_s"],
                 **evidence},
        recommendation=recommendation,
    )
