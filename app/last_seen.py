"""What one process last wrote of each (instance, collector)'s findings, so the next write is smaller.

A finding seen again exactly as this process last stored it needs only its last_seen moved. The
store decides whether that is still true: the bump (app/write_statements.py `bump_last_seen`)
matches only a row that is live, still this collector's, and still carries the last_seen of our
write. Anything else (resolved by hand, written by another worker since) is sent in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from collectors.spec import Finding


@dataclass(frozen=True, slots=True)
class Written:
    """One collector's findings on one instance as a write left them in the store."""

    at: datetime  # the run's started_at: the last_seen the write gave them
    findings: dict[str, Finding]  # fingerprint -> finding

    def unchanged(self, seen: dict[str, Finding]) -> list[str]:
        """The fingerprints of `seen` that are stored exactly as they are now."""
        return [fp for fp, f in seen.items() if self.findings.get(fp) == f]


class LastSeenCache:
    """Per (instance id, collector), the last successful write of this process."""

    def __init__(self) -> None:
        self._written: dict[tuple[int, str], Written] = {}

    def get(self, instance_id: int, collector: str) -> Written | None:
        return self._written.get((instance_id, collector))

    def put(self, instance_id: int, collector: str, at: datetime, findings: dict[str, Finding]) -> None:
        """Call only once the write is committed: an entry the store does not have would only
        cost bumps that miss and are sent again in full, but there is no reason to pay that."""
        self._written[(instance_id, collector)] = Written(at, findings)

    def forget(self, instance_id: int, collector: str | None = None) -> None:
        """Drop what is known of an instance (all its collectors, or one)."""
        if collector is not None:
            self._written.pop((instance_id, collector), None)
            return
        for key in [k for k in self._written if k[0] == instance_id]:
            del self._written[key]

    def __len__(self) -> int:
        return len(self._written)
