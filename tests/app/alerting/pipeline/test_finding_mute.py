"""Which finding states mute an alert, what the receiver is still owed, and when to acknowledge."""

from datetime import datetime, timedelta, timezone

import pytest

from app.alerting.pipeline.dedup import LogEntry
from app.alerting.pipeline.finding_mute import finding_mute, owes_resolve, split, to_acknowledge
from app.alerting.sinks.pagerduty import PagerDutyConfig
from app.alerting.sinks.webhook import WebhookConfig

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
LATER, EARLIER = NOW + timedelta(hours=1), NOW - timedelta(seconds=1)


def alert(fp="a", state=None, until=None, covered=None, severity="warning", by="alice"):
    return {"fingerprint": fp, "severity": severity, "finding_state": state, "state_until": until,
            "state_severity": covered, "state_by": by, "state_note": None}


CASES = [
    ("no finding (a threshold-rule alert)", alert(), None),
    ("open finding", alert(state="open"), None),
    ("acknowledged", alert(state="acknowledged", covered="warning"), "acknowledged"),
    ("acknowledged before the severity was recorded", alert(state="acknowledged"), "acknowledged"),
    ("acknowledged at warning, now critical", alert(state="acknowledged", covered="warning", severity="critical"),
     None),
    ("acknowledged at critical, now warning", alert(state="acknowledged", covered="critical"), "acknowledged"),
    ("silenced until resolved", alert(state="silenced"), "silenced"),
    ("silenced, escalation does not break through", alert(state="silenced", covered="info", severity="critical"),
     "silenced"),
    ("silenced for another hour", alert(state="silenced", until=LATER), "silenced"),
    ("silence ended a second ago", alert(state="silenced", until=EARLIER), None),
    ("silence ends exactly now", alert(state="silenced", until=NOW), None),
]


@pytest.mark.parametrize("why,row,expected", CASES, ids=[c[0] for c in CASES])
def test_finding_mute(why, row, expected):
    assert finding_mute(row, NOW) == expected


def test_split_carries_only_what_the_receiver_was_told():
    entry = LogEntry(firing={"told", "open"}, resolved=set(), sent_at=NOW, muted={"muted-before"})
    alerts = [alert("told", "silenced"), alert("muted-before", "silenced"), alert("never-told", "silenced"),
              alert("open", "open")]
    m = split(alerts, entry, NOW)
    assert [a["fingerprint"] for a in m.firing] == ["open"]
    assert m.muted == {"told", "muted-before"}
    assert [a["fingerprint"] for a in m.newly] == ["told"]  # muted-before was muted at the last flush already


def test_a_resolve_is_owed_for_a_muted_alert_the_receiver_was_told_about():
    entry = LogEntry(firing=set(), resolved=set(), sent_at=NOW, muted={"a"})
    assert owes_resolve(entry, {"a"}) and not owes_resolve(entry, {"b"}) and not owes_resolve(None, {"a"})


PD = PagerDutyConfig(type="pagerduty", name="pd", routing_key_ref="env:X")


@pytest.mark.parametrize("why,receiver,alerts,entry_firing,expected", [
    ("all told alerts muted", PD, [alert("a", "acknowledged")], {"a"}, ["a"]),
    ("one still firing", PD, [alert("a", "acknowledged"), alert("b", "open")], {"a", "b"}, []),
    ("acknowledged in PagerDuty itself", PD, [alert("a", "acknowledged", by="pagerduty:John")], {"a"}, []),
    ("sync turned off", PD.model_copy(update={"sync_acknowledgements": False}), [alert("a", "silenced")], {"a"},
     []),
    ("a webhook has no acknowledge", WebhookConfig(type="webhook", name="w", url="http://x"),
     [alert("a", "silenced")], {"a"}, []),
    ("muted before it was told", PD, [alert("a", "silenced")], set(), []),
])
def test_to_acknowledge(why, receiver, alerts, entry_firing, expected):
    m = split(alerts, LogEntry(firing=entry_firing, resolved=set(), sent_at=NOW), NOW)
    assert [a["fingerprint"] for a in to_acknowledge(m, receiver)] == expected
