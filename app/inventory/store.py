"""Inventory writes and reads on the store: upsert by name, filters, and the adapter's Target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.findings import retire_findings
from app.inventory.credentials import resolve_credential
from app.inventory.schemas import InstanceIn
from app.models import AuditLog, Instance
from collectors.engines.base import Target

_FIELDS = ("engine", "host", "port", "dbname", "user", "credential", "tls_mode", "tags", "enabled", "overrides")


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


def _values(item: InstanceIn) -> dict[str, Any]:
    data = item.model_dump(exclude={"name"})
    data["port"] = item.resolved_port()
    data["overrides"] = {k: v.model_dump(exclude_none=True, exclude_defaults=True) for k, v in item.overrides.items()}
    return data


async def upsert_instances(session: AsyncSession, items: list[InstanceIn], actor: str,
                           action: str = "inventory.import") -> ImportReport:
    """Create or update by name; one audit row per change. The caller commits (all or nothing)."""
    report = ImportReport()
    existing = {i.name: i for i in (await session.execute(
        select(Instance).where(Instance.name.in_([it.name for it in items])))).scalars()}
    for item in items:
        values = _values(item)
        inst = existing.get(item.name)
        if inst is None:
            session.add(Instance(name=item.name, source="manual", **values))
            session.add(AuditLog(actor=actor, action=action, target=item.name, details={"created": _safe(values)}))
            report.created.append(item.name)
            continue
        changes = {k: v for k, v in values.items() if getattr(inst, k) != v}
        if not changes:
            report.unchanged.append(item.name)
            continue
        for k, v in changes.items():
            setattr(inst, k, v)
        if changes.get("enabled") is False:
            await retire_findings(session, inst, "instance disabled")
        # A DBA's edit wins over later discovery for these fields.
        inst.pinned = {**inst.pinned, **{k: True for k in changes}}
        session.add(AuditLog(actor=actor, action=action, target=item.name, details={"changed": _safe(changes)}))
        report.updated.append(item.name)
    await session.flush()
    return report


def _safe(values: dict[str, Any]) -> dict[str, Any]:
    """Audit details: credential references are safe to log (they are references, not secrets)."""
    return {k: v for k, v in values.items() if k in _FIELDS}


def filtered(stmt: Select, engine: str | None = None, tags: dict[str, str] | None = None,
             enabled: bool | None = None) -> Select:
    if engine:
        stmt = stmt.where(Instance.engine == engine)
    if tags:
        stmt = stmt.where(Instance.tags.contains(tags))
    if enabled is not None:
        stmt = stmt.where(Instance.enabled.is_(enabled))
    return stmt


def parse_tag_selectors(selectors: list[str] | None) -> dict[str, str]:
    """['env=prod', 'team=payments'] -> {'env': 'prod', 'team': 'payments'}; ValueError names the bad one."""
    out: dict[str, str] = {}
    for sel in selectors or []:
        key, sep, value = sel.partition("=")
        if not sep or not key:
            raise ValueError(f"tag selector {sel!r} must be key=value")
        out[key] = value
    return out


async def target_for(inst: Instance) -> Target:
    """The adapter's view of an instance, with the credential resolved now (never stored)."""
    password = await resolve_credential(inst.credential, {
        "name": inst.name, "engine": inst.engine, "host": inst.host, "port": inst.port, "user": inst.user,
        "cloud": inst.cloud})
    return Target(name=inst.name, engine=inst.engine, host=inst.host, port=inst.port, dbname=inst.dbname,
                  user=inst.user, password=password, tls_mode=inst.tls_mode, options=dict(inst.cloud or {}))
