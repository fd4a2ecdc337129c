"""Dedup stage: compare what would be sent with the notification log (Alertmanager's nflog)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class LogEntry:
    firing: set[str]
    resolved: set[str]
    sent_at: datetime
    muted: set[str] = field(default_factory=set)  # told as firing, muted since (pipeline/finding_mute.py)


def needs_update(entry: LogEntry | None, firing: set[str], resolved: set[str], repeat: timedelta,
                 send_resolved: bool, now: datetime) -> bool:
    """Alertmanager's DedupStage.needsUpdate, rule for rule."""
    if entry is None:
        return bool(firing)  # never notify about a group that only ever resolved
    if not firing <= entry.firing:
        return True  # something new is firing
    if not firing:
        # Everything resolved: tell the receiver only if it was told something was firing.
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.sent_at <= now - repeat
