"""Alertmanager's needsUpdate, rule for rule."""

from datetime import datetime, timedelta, timezone

import pytest

from app.alerting.pipeline.dedup import LogEntry, needs_update

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
H4 = timedelta(hours=4)
RECENT = LogEntry({"a"}, set(), NOW - timedelta(minutes=5))

CASES = [
    ("never notified, something fires", None, {"a"}, set(), True, True),
    ("never notified, only resolved", None, set(), {"a"}, True, False),
    ("a new alert fires", RECENT, {"a", "b"}, set(), True, True),
    ("nothing changed, repeat not due", RECENT, {"a"}, set(), True, False),
    ("nothing changed, repeat due", LogEntry({"a"}, set(), NOW - H4), {"a"}, set(), True, True),
    ("everything resolved", RECENT, set(), {"a"}, False, True),
    ("one of two resolved, send_resolved", LogEntry({"a", "b"}, set(), NOW - timedelta(minutes=5)), {"a"}, {"b"},
     True, True),
    ("one of two resolved, no send_resolved", LogEntry({"a", "b"}, set(), NOW - timedelta(minutes=5)), {"a"},
     {"b"}, False, False),
    ("resolved and told already", LogEntry(set(), {"a"}, NOW - timedelta(minutes=5)), set(), {"a"}, True, False),
]


@pytest.mark.parametrize("why,entry,firing,resolved,send_resolved,expected", CASES, ids=[c[0] for c in CASES])
def test_needs_update(why, entry, firing, resolved, send_resolved, expected):
    assert needs_update(entry, firing, resolved, H4, send_resolved, NOW) is expected
