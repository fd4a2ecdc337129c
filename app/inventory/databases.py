"""Database discovery: a server with include/exclude patterns gets an entry for each database
(MySQL: schema) that matches, as pgwatch's `dbname_include_pattern` does.

Rules a DBA can rely on: the listing session is a collector's (read-only, timeouts); a database
already covered by an entry (listed, or a schema of a MySQL entry) gets no second one; an entry
discovery made whose database is gone or no longer matches is marked gone and its findings
resolved, never deleted, and returns if the database does; entries a DBA listed are never
touched; each change is one audit row by "discovery:databases". A server that cannot be listed
changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.findings import retire_findings
from app.inventory.credentials import CredentialError, resolve_credential
from app.inventory.schemas import DEFAULT_DATABASE, entry_name, is_mysql
from app.models import AuditLog, Instance, Server
from collectors.engines.base import ConnectFailed, SessionLimits, Target, connect

log = logging.getLogger(__name__)
SOURCE = "discovered"
# What MySQL and MariaDB keep for themselves: never an entry.
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
LIST_SQL = {
    "postgres": "select datname as name from pg_database where datallowconn and not datistemplate order by 1",
    "mysql": "select schema_name as name from information_schema.schemata order by 1",
}


@dataclass
class DatabaseDiscovery:
    server: str
    found: list[str] = field(default_factory=list)  # the databases that match the patterns
    added: list[str] = field(default_factory=list)  # entry names
    returned: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    error: str | None = None


def wanted(name: str, patterns: dict[str, Any]) -> bool:
    return (any(fnmatchcase(name, p) for p in patterns.get("include") or ["*"])
            and not any(fnmatchcase(name, p) for p in patterns.get("exclude") or []))


def _family(engine: str) -> str:
    return "mysql" if is_mysql(engine) else "postgres" if "postgres" in engine else engine


async def list_databases(server: Server, settings: Any) -> list[str]:
    """The server's databases (MySQL: schemas less the system ones), over a read-only session."""
    family = _family(server.engine)
    if family not in LIST_SQL:
        raise ConnectFailed(Target(server.name, server.engine, server.host, server.port),
                            f"database discovery does not list {server.engine} servers")
    password = await resolve_credential(server.credential, {
        "name": server.name, "engine": server.engine, "host": server.host, "port": server.port,
        "user": server.user, "cloud": server.cloud}, allowed=settings.credentials)
    target = Target(name=server.name, engine=server.engine, host=server.host, port=server.port,
                    dbname=DEFAULT_DATABASE.get(server.engine, ""), user=server.user, password=password,
                    tls_mode=server.tls_mode, options=dict(server.cloud or {}))
    w = settings.worker
    conn = await connect(target, SessionLimits(connect_timeout_s=w.connect_timeout_s,
                                               statement_timeout_ms=w.statement_timeout_ms,
                                               lock_timeout_ms=w.lock_timeout_ms))
    try:
        rows = await conn.fetch(LIST_SQL[family])
    finally:
        await conn.close()
    names = [str(r["name"]) for r in rows]
    return [n for n in names if n.lower() not in SYSTEM_SCHEMAS] if family == "mysql" else names


def _free_name(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name[:190]}-{n}"
    taken.add(candidate)
    return candidate


async def apply_discovery(session: AsyncSession, server: Server, names: list[str],
                          now: datetime | None = None) -> DatabaseDiscovery:
    """Bring the server's discovered entries in line with the databases listed; the caller commits."""
    now = now or datetime.now(timezone.utc)
    result = DatabaseDiscovery(server.name, found=[n for n in names if wanted(n, server.databases or {})])
    entries = list((await session.execute(select(Instance).where(Instance.server_id == server.id))).scalars())
    covered = {db for e in entries if e.source != SOURCE or e.gone_at is None for db in [e.dbname, *(e.schemas or [])]}
    for e in (e for e in entries if e.source == SOURCE):
        if e.dbname in result.found and e.gone_at is not None:
            e.gone_at = None
            result.returned.append(e.name)
            covered.add(e.dbname)
        elif e.dbname not in result.found and e.gone_at is None:
            e.gone_at = now
            result.gone.append(e.name)
            await retire_findings(session, e, f"database {e.dbname} gone from server {server.name}", now)
    taken = set((await session.execute(select(Instance.name))).scalars())
    for db in (n for n in result.found if n not in covered):
        name = _free_name(entry_name(server.name, db), taken)
        session.add(Instance(name=name, engine=server.engine, host=server.host, port=server.port, dbname=db,
                             user=server.user, credential=server.credential, tls_mode=server.tls_mode,
                             tags=dict(server.tags), enabled=server.enabled, source=SOURCE, server_id=server.id))
        result.added.append(name)
    if result.added or result.returned or result.gone:
        session.add(AuditLog(actor="discovery:databases", action="server.discover", target=server.name,
                             details={"added": result.added, "returned": result.returned, "gone": result.gone}))
    await session.flush()
    return result


async def discover_databases(store: Any, settings: Any, server: Server) -> DatabaseDiscovery:
    """List one server and apply what was found, in a transaction of its own."""
    try:
        names = await list_databases(server, settings)
    except (ConnectFailed, CredentialError) as e:
        log.warning("database discovery on server %s failed: %s", server.name, e)
        return DatabaseDiscovery(server.name, error=str(e))
    async with store.sessions() as session, session.begin():
        row = await session.get(Server, server.id)
        if row is None or row.databases is None:
            return DatabaseDiscovery(server.name)  # deleted or its patterns removed meanwhile
        return await apply_discovery(session, row, names)


async def discover_all(store: Any, settings: Any, only: str | None = None, shard: Any = None) -> list[DatabaseDiscovery]:
    """Every enabled server with patterns (one by name with `only`; this shard's with `shard`)."""
    async with store.sessions() as session:
        stmt = select(Server).where(Server.databases.is_not(None), Server.enabled.is_(True)).order_by(Server.name)
        servers = [s for s in (await session.execute(stmt if only is None else stmt.where(Server.name == only))).scalars()
                   if shard is None or shard.owns(s.id)]
    return [await discover_databases(store, settings, s) for s in servers]
