"""When a check is due: at its own phase within its period, so 1,000 checks do not fire on one tick.

A check every 5 minutes runs once in each 5-minute slot of the clock, at an offset within the slot
taken from a hash of its name and the instance's (stable across restarts and workers; Python's
hash() is not). A check that has never run waits for its first slot after it was defined, so a
thousand new definitions spread over their periods too (`dbfleet checks run` runs them at once).
"""

from __future__ import annotations

import hashlib
from datetime import datetime


def phase_s(check_name: str, instance: str, period_s: int) -> int:
    """The check's offset in seconds within its period on this instance, in [0, period_s)."""
    digest = hashlib.sha256(f"{check_name}\0{instance}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(1, period_s)


def slot_start(at: datetime, period_s: int, phase: int) -> float:
    """The epoch second the current slot began: the latest phase + k * period at or before `at`."""
    t = at.timestamp()
    return t - (t - phase) % max(1, period_s)


def is_due(at: datetime, last: datetime | None, period_s: int, phase: int) -> bool:
    """Due when it has not run since its current slot began (`last`: its last run, or when it was
    defined if it never ran; None: run now)."""
    return last is None or last.timestamp() < slot_start(at, period_s, phase)
