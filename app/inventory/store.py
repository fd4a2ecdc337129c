"""Inventory writes and reads on the store: upsert by name and filters (the adapter's Target: targets.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.findings import retire_findings
from app.inventory.schemas import DatabaseIn, InstanceIn, ServerIn, entry_name
from app.models import AuditLog, Instance, Server
from collectors.registry import ENGINE_FAMILY

_FIELDS = ("engine", "host", "port", "dbname", "user", "credential", "tls_mode", "tags", "enabled", "overrides",
           "schemas")
# What a server's entries connect with: a change on the server follows to the entries that had its old value.
CONNECTION = ("engine", "host", "port", "user", "credential", "tls_mode")
_SERVER_FIELDS = (*CONNECTION, "tags", "enabled", "databases")


class InventoryConflict(ValueError):
    """The store holds something the file cannot be applied over; `errors` say where and which field."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    servers: ImportReport | None = None  # the servers' own rows, when the file had servers

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}
        if self.servers is not None:
            out["servers"] = self.servers.as_dict()
        return out

    def add(self, other: ImportReport) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged


def _values(item: InstanceIn) -> dict[str, Any]:
    data = item.model_dump(exclude={"name"})
    data["port"] = item.resolved_port()
    data["overrides"] = {k: v.model_dump(exclude_none=True, exclude_defaults=True) for k, v in item.overrides.items()}
    return data


async def upsert_instances(session: AsyncSession, items: list[InstanceIn], actor: str,
                           action: str = "inventory.import", server: Server | None = None) -> ImportReport:
    """Create or update by name; one audit row per change. The caller commits (all or nothing).
    Without `server`, the store links each row to the server at its endpoint (migration 0008)."""
    report = ImportReport()
    existing = {i.name: i for i in (await session.execute(
        select(Instance).where(Instance.name.in_([it.name for it in items])))).scalars()}
    for item in items:
        values = _values(item)
        if server is not None:
            values["server_id"] = server.id
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


def server_values(item: ServerIn) -> dict[str, Any]:
    data = item.model_dump(include={"engine", "host", "user", "credential", "tls_mode", "tags", "enabled"})
    return {**data, "port": item.resolved_port(), "databases": item.patterns()}


def entry_item(server: Server, entry: DatabaseIn, name: str) -> InstanceIn:
    """The instance row an entry is: the server's connection, its tags under the entry's own."""
    return InstanceIn.model_validate({
        **{k: getattr(server, k) for k in CONNECTION}, "name": name, "dbname": entry.dbname,
        "schemas": entry.schemas, "tags": {**server.tags, **entry.tags}, "enabled": server.enabled and entry.enabled,
        "overrides": {k: v.model_dump(exclude_none=True, exclude_defaults=True) for k, v in entry.overrides.items()}})


async def server_at(session: AsyncSession, engine: str, host: str, port: int) -> Server | None:
    """The server at an endpoint (engine family, host case-folded, port), as the store links them."""
    family = ENGINE_FAMILY.get(engine, engine)
    candidates = (await session.execute(select(Server).where(
        func.lower(Server.host) == host.lower(), Server.port == port).order_by(Server.id))).scalars()
    return next((s for s in candidates if ENGINE_FAMILY.get(s.engine, s.engine) == family), None)


async def _server_for(session: AsyncSession, item: ServerIn) -> Server | None:
    """The row this item is: by name, else the server at its endpoint (one made for instances
    listed without a server, which the declared name then replaces)."""
    found = (await session.execute(select(Server).where(Server.name == item.name))).scalar_one_or_none()
    return found or await server_at(session, item.engine, item.host, item.resolved_port())


async def follow_server(session: AsyncSession, server: Server, old: dict[str, Any]) -> None:
    """Entries that had the server's old connection fields or tags take its new ones."""
    entries = (await session.execute(select(Instance).where(Instance.server_id == server.id))).scalars()
    for inst in entries:
        for k in CONNECTION:
            if k in old and getattr(inst, k) == old[k]:
                setattr(inst, k, getattr(server, k))
        if "tags" in old:
            own = {k: v for k, v in inst.tags.items() if old["tags"].get(k) != v}
            inst.tags = {**server.tags, **own}
        if old.get("enabled") is not None and inst.enabled != server.enabled and inst.gone_at is None:
            inst.enabled = server.enabled
            if not server.enabled:
                await retire_findings(session, inst, "server disabled")


async def save_server(session: AsyncSession, item: ServerIn, actor: str, action: str,
                      report: ImportReport) -> Server:
    """Create or update the server row itself (not its entries); audited."""
    server, values = await _server_for(session, item), server_values(item)
    if server is None:
        server = Server(name=item.name, **values)
        session.add(server)
        session.add(AuditLog(actor=actor, action=action, target=item.name, details={"created": values}))
        report.created.append(item.name)
        await session.flush()
        return server
    changes = {k: v for k, v in {"name": item.name, **values}.items() if getattr(server, k) != v}
    if not changes:
        report.unchanged.append(item.name)
        return server
    old = {k: getattr(server, k) for k in changes}
    for k, v in changes.items():
        setattr(server, k, v)
    await session.flush()
    await follow_server(session, server, old)
    session.add(AuditLog(actor=actor, action=action, target=item.name, details={"changed": changes}))
    report.updated.append(item.name)
    return server


async def _entry_names(session: AsyncSession, server: Server, entries: list[DatabaseIn],
                       where: str) -> list[str]:
    """Each entry's instance name: its own, else the existing entry for its database on this
    server (its findings history stays with it), else <server>.<db>."""
    mine = {(i.dbname, tuple(i.schemas or [])): i.name for i in (await session.execute(
        select(Instance).where(Instance.server_id == server.id))).scalars()}
    names = [e.name or mine.get((e.dbname, tuple(e.schemas))) or entry_name(server.name, e.dbname) for e in entries]
    taken = {i.name: i.server_id for i in (await session.execute(
        select(Instance).where(Instance.name.in_(names)))).scalars()}
    errors = [f"{where}: databases.{n}: entry name {name!r} is an instance on another server; give the entry "
              "its own name" for n, (e, name) in enumerate(zip(entries, names))
              if not e.name and taken.get(name, server.id) != server.id]
    if errors:
        raise InventoryConflict(errors)
    return names


async def upsert_entries(session: AsyncSession, server: Server, entries: list[DatabaseIn], actor: str,
                         action: str, where: str) -> ImportReport:
    """The server's listed entries as instance rows, by name (see _entry_names)."""
    names = await _entry_names(session, server, entries, where)
    return await upsert_instances(session, [entry_item(server, e, n) for e, n in zip(entries, names)],
                                  actor, action, server=server)


async def upsert_servers(session: AsyncSession, items: list[ServerIn], actor: str,
                         action: str = "inventory.import", where: dict[str, str] | None = None,
                         server_action: str = "inventory.import.server") -> ImportReport:
    """Servers by name, then their listed entries (instances) by name; the caller commits."""
    report, servers = ImportReport(), ImportReport()
    for item in items:
        server = await save_server(session, item, actor, server_action, servers)
        report.add(await upsert_entries(session, server, item.entries(), actor, action,
                                        (where or {}).get(item.name, f"server {item.name}")))
    report.servers = servers
    return report


async def upsert_inventory(session: AsyncSession, inventory: Any, actor: str,
                           action: str = "inventory.import") -> ImportReport:
    """A parsed file (io.Inventory): servers and their entries first, so that instances listed on
    their own join the declared server at their endpoint."""
    report = await upsert_servers(session, inventory.servers, actor, action, inventory.where)
    report.add(await upsert_instances(session, inventory.instances, actor, action))
    if not inventory.servers:
        report.servers = None
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
