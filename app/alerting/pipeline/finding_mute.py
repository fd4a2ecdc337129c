"""Finding stage: an acknowledged or silenced finding mutes its alert, next to Alertmanager's label
silences. The flush reads the finding's state in the query that loads the group members.

What a DBA gets, decided as Alertmanager decides for silenced alerts, except where the receiver is
owed something:
- While the acknowledgement or silence lasts, the alert is left out of firing notifications and of
  repeat_interval reminders. A group whose alerts are all muted sends nothing; a mixed group sends
  only its unmuted alerts.
- A silence ends at its `state_until` (or when the finding resolves or is re-opened); an
  acknowledgement lasts until the finding resolves or is re-opened. The alert is then new again and
  fires at the group's next flush.
- An acknowledgement covers the severity it was given at: a worse one (warning -> critical) is not
  muted, so an escalation pages. A silence covers every severity: it says "known and accepted".
  (A PagerDuty incident we acknowledged takes the new trigger under the same dedup key; whether
  it pages again is the service's acknowledgement-timeout setting, not ours.)
- Resolution: a receiver that was told the alert was firing before it was muted still gets the
  resolve, or its incident (PagerDuty, Opsgenie, a Slack thread) would stay open for ever. An alert
  muted before any receiver heard of it resolves silently, as a silenced alert does in Alertmanager.
- Acknowledgement sync: once every alert a receiver was told about in a group is muted, a receiver
  with `sync_acknowledgements` (PagerDuty, Opsgenie) is sent an acknowledge for the group's dedup
  key, so its escalation stops too. Not when the acknowledgement came from that kind of receiver
  (state_by `pagerduty:<user>`): it knows already.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.alerting.notification import SEVERITY_RANK
from app.alerting.pipeline.dedup import LogEntry

MUTING_STATES = ("acknowledged", "silenced")


def finding_mute(alert: Mapping[str, Any], now: datetime) -> str | None:
    """The finding state that mutes this alert now ('acknowledged' or 'silenced'), or None."""
    state = alert.get("finding_state")
    if state not in MUTING_STATES:
        return None
    if alert["state_until"] is not None and alert["state_until"] <= now:
        return None  # the silence has ended; the dispatcher re-opens the finding shortly
    covered = alert["state_severity"] or alert["severity"]
    if state == "acknowledged" and SEVERITY_RANK.get(alert["severity"], 0) > SEVERITY_RANK.get(covered, 0):
        return None  # escalated since it was acknowledged
    return state


@dataclass
class Muting:
    firing: list[dict[str, Any]] = field(default_factory=list)  # unmuted: what may be sent
    muted: set[str] = field(default_factory=set)  # muted, and told as firing before: owed a resolve
    newly: list[dict[str, Any]] = field(default_factory=list)  # of those, firing in the last notification


def split(firing: list[dict[str, Any]], entry: LogEntry | None, now: datetime) -> Muting:
    told = told_firing(entry)
    out = Muting()
    for a in firing:
        fp = a["fingerprint"]
        if finding_mute(a, now) is None:
            out.firing.append(a)
        elif fp in told:
            out.muted.add(fp)
            if entry is not None and fp in entry.firing:
                out.newly.append(a)
    return out


def told_firing(entry: LogEntry | None) -> set[str]:
    """What the receiver believes is firing: what it was last sent, and what was muted since."""
    return entry.firing | entry.muted if entry else set()


def owes_resolve(entry: LogEntry | None, resolved: set[str]) -> bool:
    """A muted alert the receiver was told about has resolved: say so, whatever else is (not) firing."""
    return bool(entry and resolved & entry.muted)


def to_acknowledge(muting: Muting, receiver: Any) -> list[dict[str, Any]]:
    """The newly muted alerts to acknowledge at this receiver; empty when nothing is to be sent."""
    if muting.firing or not getattr(receiver, "sync_acknowledgements", False):
        return []
    if all((a["state_by"] or "").startswith(f"{receiver.type}:") for a in muting.newly):
        return []
    return muting.newly


def acknowledge_note(alerts: list[dict[str, Any]]) -> str:
    lines = {f"{a['finding_state'].capitalize()} in dbfleet by {a['state_by']}"
             + (f" until {a['state_until'].isoformat()}" if a["state_until"] else "")
             + (f": {a['state_note']}" if a["state_note"] else "") for a in alerts}
    return "\n".join(sorted(lines))
