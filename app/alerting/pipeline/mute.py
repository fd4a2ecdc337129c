"""Mute stage: a route's mute_time_intervals (maintenance windows) hold its notifications;
active_time_intervals, when given, allow them only inside the windows."""

from __future__ import annotations

from datetime import datetime

from app.alerting.routing import Route
from app.alerting.timeintervals import NamedTimeInterval, any_active


def muted(route: Route, intervals: dict[str, NamedTimeInterval], now: datetime) -> bool:
    if route.mute_time_intervals and any_active(route.mute_time_intervals, intervals, now):
        return True
    return bool(route.active_time_intervals) and not any_active(route.active_time_intervals, intervals, now)
