"""Server routes: a server and the database entries on it, with each entry's open findings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import func, select

from app.api import errors
from app.api.deps import AdminDep, SessionDep, SettingsDep, ViewerDep
from app.api.instances import check_credential, merged_body
from app.api.params import ServerName, StrictJsonRoute
from app.findings import retire_findings
from app.inventory.schemas import DatabaseEntryOut, Engine, ServerIn, ServerOut, ServerPatch
from app.inventory.store import ImportReport, InventoryConflict, save_server, server_at, upsert_entries
from app.models import AuditLog, Finding, Instance, Server

router = APIRouter(prefix="/api/v1", tags=["servers"], route_class=StrictJsonRoute)


async def _get(session: SessionDep, name: str) -> Server:
    server = (await session.execute(select(Server).where(Server.name == name))).scalar_one_or_none()
    if server is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no server named {name!r}")
    return server


async def _entries(session: SessionDep, server_ids: list[int]) -> dict[int, list[DatabaseEntryOut]]:
    """Each server's entries with their open findings by severity: one grouped query."""
    stmt = (select(Instance, Finding.severity, func.count(Finding.id))
            .outerjoin(Finding, (Finding.instance_id == Instance.id) & (Finding.state == "open"))
            .where(Instance.server_id.in_(server_ids)).group_by(Instance.id, Finding.severity).order_by(Instance.name))
    by_entry: dict[int, tuple[Instance, dict[str, int]]] = {}
    for inst, severity, n in await session.execute(stmt):
        counts = by_entry.setdefault(inst.id, (inst, {"critical": 0, "warning": 0, "info": 0}))[1]
        if severity is not None:
            counts[severity] = n
    out: dict[int, list[DatabaseEntryOut]] = {}
    for inst, counts in by_entry.values():
        out.setdefault(inst.server_id, []).append(DatabaseEntryOut(
            name=inst.name, dbname=inst.dbname, schemas=list(inst.schemas or []), enabled=inst.enabled,
            source=inst.source, gone_at=inst.gone_at, open_findings=counts))
    return out


def _out(server: Server, entries: list[DatabaseEntryOut]) -> ServerOut:
    return ServerOut(id=server.id, name=server.name, engine=server.engine, host=server.host, port=server.port,
                     user=server.user, credential=server.credential, tls_mode=server.tls_mode, tags=server.tags,
                     enabled=server.enabled, cloud=server.cloud, patterns=server.databases, databases=entries,
                     created_at=server.created_at, updated_at=server.updated_at)


async def _one(session: SessionDep, server: Server) -> ServerOut:
    await session.flush()
    await session.refresh(server)
    return _out(server, (await _entries(session, [server.id])).get(server.id, []))


@router.get("/servers", response_model=list[ServerOut], responses=errors.VIEWER)
async def list_servers(session: SessionDep, _: ViewerDep, engine: Engine | None = None) -> list[ServerOut]:
    stmt = select(Server).order_by(Server.name)
    servers = list((await session.execute(stmt if engine is None else stmt.where(Server.engine == engine))).scalars())
    entries = await _entries(session, [s.id for s in servers])
    return [_out(s, entries.get(s.id, [])) for s in servers]


@router.get("/servers/{name}", response_model=ServerOut, responses=errors.VIEWER | errors.responses(404))
async def get_server(name: ServerName, session: SessionDep, _: ViewerDep) -> ServerOut:
    return await _one(session, await _get(session, name))


async def _save(session: SessionDep, item: ServerIn, who: str, action: str, with_entries: bool) -> ServerOut:
    server = await save_server(session, item, who, action, ImportReport())
    if with_entries:
        try:
            await upsert_entries(session, server, item.entries(), who, action.replace("server.", "instance."),
                                 f"server {item.name}")
        except InventoryConflict as e:
            raise errors.line_errors(status.HTTP_409_CONFLICT, "the store conflicts", e.errors, "conflict") from None
    return await _one(session, server)


@router.post("/servers", response_model=ServerOut, status_code=201, responses=errors.ADMIN | errors.responses(409))
async def create_server(body: ServerIn, session: SessionDep, settings: SettingsDep, who: AdminDep) -> ServerOut:
    """A server and its entries (`databases` omitted: one entry, the server's default database)."""
    check_credential(body.credential, settings)
    if (await session.execute(select(Server.id).where(Server.name == body.name))).first():
        raise HTTPException(status.HTTP_409_CONFLICT, f"a server named {body.name!r} exists; PATCH it instead")
    if (other := await server_at(session, body.engine, body.host, body.resolved_port())) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"server {other.name!r} is at {body.host}:{body.resolved_port()}; "
                                                      "PATCH it instead")
    return await _save(session, body, who.name, "server.create", with_entries=True)


def _current(server: Server) -> dict[str, Any]:
    return {"name": server.name, "engine": server.engine, "host": server.host, "port": server.port,
            "user": server.user, "credential": server.credential, "tls_mode": server.tls_mode, "tags": server.tags,
            "enabled": server.enabled, "databases": server.databases}


@router.patch("/servers/{name}", response_model=ServerOut, responses=errors.ADMIN | errors.responses(404, 409))
async def update_server(name: ServerName, body: ServerPatch, session: SessionDep, settings: SettingsDep,
                        who: AdminDep) -> ServerOut:
    """Only the fields sent change. Connection fields and tags follow to the entries that had the
    old values; `databases` adds or updates the entries it lists (an entry goes with DELETE
    /api/v1/instances/{name}) or sets the discovery patterns."""
    check_credential(body.credential, settings)
    server = await _get(session, name)
    sent = body.model_dump(exclude_unset=True)
    if body.databases is not None:
        sent["databases"] = body.databases.model_dump() if hasattr(body.databases, "include") else \
            [e.model_dump() for e in body.databases]
    merged = merged_body(ServerIn, {**_current(server), **sent})
    return await _save(session, merged, who.name, "server.update", with_entries="databases" in sent)


@router.delete("/servers/{name}", status_code=204, response_class=Response,
               responses=errors.ADMIN | errors.responses(404))
async def delete_server(name: ServerName, session: SessionDep, who: AdminDep) -> Response:
    """The server and its entries; their findings go with them, and their alerts are resolved."""
    server = await _get(session, name)
    entries = list((await session.execute(select(Instance).where(Instance.server_id == server.id))).scalars())
    for inst in entries:
        await retire_findings(session, inst, "server deleted")
    await session.flush()
    for inst in entries:
        await session.delete(inst)
    await session.delete(server)
    session.add(AuditLog(actor=who.name, action="server.delete", target=name,
                         details={"entries": [i.name for i in entries]}))
    return Response(status_code=204)
