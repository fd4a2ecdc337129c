"""What a sink receives: one group's alerts at one moment, with a stable dedup key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

SEVERITY_RANK = {"critical": 3, "error": 2, "warning": 1, "info": 0}


def dedup_key(group_key: str, receiver: str) -> str:
    """Stable across restarts and dispatchers; 72 chars, inside PagerDuty's 255."""
    return "dbfleet-" + hashlib.sha256(f"{receiver}\x1f{group_key}".encode()).hexdigest()


@dataclass
class Notification:
    receiver: str
    group_key: str
    status: str  # firing | resolved (resolved = every alert in the group has resolved)
    group_labels: dict[str, str]
    alerts: list[dict[str, Any]]  # fingerprint, status, labels, annotations, starts_at, ends_at (ISO)
    kind: str = "alert"  # alert | reminder | test
    note: str = ""
    id: int | None = None
    dedup_key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.dedup_key:
            self.dedup_key = dedup_key(self.group_key, self.receiver)

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of this notification, so a receiver can drop a resend."""
        return f"{self.dedup_key}:{self.id if self.id is not None else self.status}"

    @property
    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["status"] == "firing"]

    @property
    def resolved(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["status"] == "resolved"]

    @property
    def severity(self) -> str:
        levels = [a["labels"].get("severity", "info") for a in (self.firing or self.alerts)]
        return max(levels, key=lambda s: SEVERITY_RANK.get(s, 0), default="info")

    def common(self, key: str) -> dict[str, str]:
        """Labels or annotations shared by every alert (Alertmanager's commonLabels)."""
        if not self.alerts:
            return {}
        first = dict(self.alerts[0][key])
        return {k: v for k, v in first.items() if all(a[key].get(k) == v for a in self.alerts[1:])}

    def title(self) -> str:
        """One line: what, where, how many."""
        labels = self.common("labels") or self.group_labels
        what = labels.get("alertname", "alerts")
        where = labels.get("instance", "")
        prefix = "REMINDER: " if self.kind == "reminder" else "TEST: " if self.kind == "test" else ""
        count = len(self.firing) if self.status == "firing" else len(self.resolved)
        text = f"{prefix}[{self.status.upper()}:{count}] {what}" + (f" on {where}" if where else "")
        summary = self.common("annotations").get("summary")
        return f"{text}: {summary}" if summary else text

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every alert, a hot spot at thousands per second.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], id: int | None = None) -> Notification:
        return cls(**{**data, "id": id if id is not None else data.get("id")})
