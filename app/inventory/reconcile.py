"""Reconciling what a cloud lists with the inventory, shared by AWS and Azure discovery.

Rules a DBA can rely on, whichever cloud: an instance is matched by its cloud identity; a manual
row for the same endpoint is adopted and the fields it already had are pinned; pinned fields are
never overwritten; an instance that disappears is marked gone (and its findings resolved), never
deleted, and is revived if it comes back; every change writes an audit row by "discovery:<cloud>";
a dry run writes nothing. The caller owns the transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.findings import retire_findings
from app.models import AuditLog, Instance

MANAGED = ("engine", "host", "port", "dbname", "tags", "cloud")
_TAG_KEY = re.compile(r"[^A-Za-z0-9_.\-/]")


class DiscoveryError(Exception):
    """Discovery could not list the region or subscription; nothing was written."""


def clean_tags(tag_list: list[dict[str, str]] | None) -> dict[str, str]:
    """Cloud tag keys may hold spaces or ':'; the inventory's may not, so those become '_'."""
    out = {}
    for tag in tag_list or []:
        key = _TAG_KEY.sub("_", tag["Key"])
        out[key if re.match(r"[A-Za-z_]", key) else f"_{key}"] = tag.get("Value", "")
    return out


def matches(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(tags.get(k) == v for k, v in wanted.items())


def field_diff(inst: Instance, row: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Changed managed fields ({field: {from, to}}, cloud per key) and the pinned ones kept."""
    changes: dict[str, dict[str, Any]] = {}
    kept: list[str] = []
    for name in MANAGED:
        old, new = getattr(inst, name), row[name]
        if old == new:
            continue
        if name in (inst.pinned or {}):
            kept.append(name)
        elif name == "cloud":
            for key in sorted(set(old or {}) | set(new)):
                if (old or {}).get(key) != new.get(key):
                    changes[f"cloud.{key}"] = {"from": (old or {}).get(key), "to": new.get(key)}
        else:
            changes[name] = {"from": old, "to": new}
    return changes, kept


class ExistingRows:
    """The inventory rows discovery can touch: manual rows by endpoint, every row's name."""

    def __init__(self, rows: list[Instance]):
        self.manual_by_endpoint = {(r.host.lower(), r.port): r for r in rows if r.source == "manual"}
        self.names = {r.name for r in rows}

    def free_name(self, name: str, where: str) -> str:
        """The cloud's name, or name.<region>[.n] when a different instance already has it."""
        for candidate in (name, f"{name}.{where}"):
            if candidate not in self.names:
                self.names.add(candidate)
                return candidate
        n = 2
        while f"{name}.{where}.{n}" in self.names:
            n += 1
        self.names.add(f"{name}.{where}.{n}")
        return f"{name}.{where}.{n}"


@dataclass
class Change:
    """One instance that discovery added, changed or marked gone; `ident` is its cloud identity."""

    name: str
    ident: str
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> {"from": .., "to": ..}


@dataclass(frozen=True)
class Cloud:
    """One cloud's words for what discovery reports: its source name, what a pass covers (a region,
    a subscription) and the key in `cloud` that identifies an instance."""

    source: str                                   # "aws", "azure"
    scope_key: str                                # "region", "subscription"
    id_key: str                                   # "arn", "resource_id"
    label: str                                    # how the CLI names a pass: "AWS", "Azure subscription"

    def change(self, name: str, ident: str, fields: dict[str, dict[str, Any]]) -> Change:
        return Change(name, ident, fields)

    def _audit(self, session: AsyncSession, action: str, name: str, ident: str, fields: dict) -> None:
        session.add(AuditLog(actor=f"discovery:{self.source}", action=action, target=name,
                             details={self.id_key: ident, "changes": fields}))

    def add(self, session: AsyncSession, row: dict[str, Any], name: str, diff: Any) -> None:
        change = self.change(name, row["cloud"][self.id_key],
                             {k: {"from": None, "to": v} for k, v in row.items() if k != "name"})
        diff.added.append(change)
        if not diff.dry_run:
            session.add(Instance(**{**row, "name": name}, source=self.source, pinned={}))
            self._audit(session, "instance.discovered", name, row["cloud"][self.id_key], change.fields)

    def adopt(self, session: AsyncSession, inst: Instance, row: dict[str, Any], diff: Any) -> None:
        """A manual row for the same endpoint: keep what the DBA typed (pinned), add the cloud identity."""
        pinned = {k: True for k in MANAGED if k != "cloud" and getattr(inst, k) != row[k]}
        fields = {"source": {"from": "manual", "to": self.source}, "cloud": {"from": inst.cloud, "to": row["cloud"]}}
        diff.changed.append(self.change(inst.name, row["cloud"][self.id_key], fields))
        if pinned:
            diff.pinned_kept[inst.name] = sorted(pinned)
        if not diff.dry_run:
            inst.source, inst.cloud, inst.pinned = self.source, row["cloud"], {**(inst.pinned or {}), **pinned}
            self._audit(session, "instance.adopted", inst.name, row["cloud"][self.id_key], fields)

    def update(self, session: AsyncSession, inst: Instance, row: dict[str, Any], diff: Any) -> None:
        changes, kept = field_diff(inst, row)
        if kept:
            diff.pinned_kept[inst.name] = kept
        if inst.gone_at is not None:
            changes["gone_at"] = {"from": inst.gone_at.isoformat(), "to": None}
        if not changes:
            diff.unchanged.append(inst.name)
            return
        diff.changed.append(self.change(inst.name, row["cloud"][self.id_key], changes))
        if not diff.dry_run:
            for name in MANAGED:
                if name not in kept and any(k == name or k.startswith(f"{name}.") for k in changes):
                    setattr(inst, name, row[name])
            action = "instance.returned" if inst.gone_at is not None else "instance.updated"
            inst.gone_at = None
            self._audit(session, action, inst.name, row["cloud"][self.id_key], changes)

    async def mark_gone(self, session: AsyncSession, inst: Instance, now: datetime, diff: Any, where: str) -> None:
        fields = {"gone_at": {"from": None, "to": now.isoformat()}}
        diff.gone.append(self.change(inst.name, inst.cloud[self.id_key], fields))
        if not diff.dry_run:
            inst.gone_at = now
            self._audit(session, "instance.gone", inst.name, inst.cloud[self.id_key], fields)
            await retire_findings(session, inst, f"instance gone from {where}", now)


@dataclass
class DiscoveryDiff:
    """What one discovery pass over a region or subscription found, and did unless dry_run."""

    cloud: Cloud
    where: str                                    # the region or subscription listed
    dry_run: bool = False
    added: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    gone: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pinned_kept: dict[str, list[str]] = field(default_factory=dict)  # name -> pinned fields that differ

    def as_dict(self) -> dict[str, Any]:
        """The diff in the cloud's own words: {"region": ..} and "arn" for AWS, "subscription" and
        "resource_id" for Azure."""
        def change(c: Change) -> dict[str, Any]:
            return {"name": c.name, self.cloud.id_key: c.ident, "fields": c.fields}

        return {self.cloud.scope_key: self.where, "dry_run": self.dry_run,
                "added": [change(c) for c in self.added], "changed": [change(c) for c in self.changed],
                "gone": [change(c) for c in self.gone], "unchanged": list(self.unchanged),
                "pinned_kept": dict(self.pinned_kept)}
