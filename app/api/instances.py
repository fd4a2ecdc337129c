"""Inventory routes: create, read, update, delete, list, import and export instances."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.api import errors
from app.api.deps import AdminDep, SessionDep, SettingsDep, ViewerDep
from app.api.params import InstanceName, ServerFilter, TagSelectors, StrictJsonRoute
from app.findings import retire_findings
from app.inventory import io
from app.inventory.credentials import refusal
from app.inventory.schemas import Engine, InstanceIn, InstanceOut, InstancePatch
from app.inventory.store import (
    InventoryConflict,
    filtered,
    parse_tag_selectors,
    upsert_instances,
    upsert_inventory,
)
from app.models import AuditLog, Instance, Server

router = APIRouter(prefix="/api/v1", tags=["instances"], route_class=StrictJsonRoute)
# An inventory file: YAML with `servers:` and/or `instances:` lists (app/inventory/io.py), or the instance CSV.
_YAML_FILE = {"type": "object", "properties": {"servers": {"type": "array", "items": {"type": "object"}},
                                               "instances": {"type": "array", "items": {"type": "object"}}}}
_FILE_BODY = {"content": {"application/yaml": {"schema": _YAML_FILE}, "text/csv": {"schema": {"type": "string"}}}}


class ServerCounts(BaseModel):
    created: list[str]
    updated: list[str]
    unchanged: list[str]


class ImportReportOut(ServerCounts):
    """What an import did, by instance name (and by server name, when the file had servers)."""

    servers: ServerCounts | None = Field(None, description="the servers' own rows, when the file had servers")


async def _get(session: SessionDep, name: str) -> Instance:
    inst = (await session.execute(select(Instance).where(Instance.name == name))).scalar_one_or_none()
    if inst is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no instance named {name!r}")
    return inst


async def instance_out(session: SessionDep, inst: Instance, server: str | None = None) -> InstanceOut:
    """An instance with the name of the server it is on."""
    if server is None:
        server = (await session.execute(select(Server.name).where(Server.id == inst.server_id))).scalar_one_or_none()
    return InstanceOut.model_validate(inst).model_copy(update={"server": server})


def merged_body(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """A PATCH over the stored fields; a field valid alone but not with them (schemas on a
    PostgreSQL entry) is a 422 on that field of the body."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


def check_credential(reference: str | None, settings: SettingsDep) -> None:
    """A reference outside the credentials allow-list is a 422 on the `credential` field."""
    if reason := refusal(reference, settings.credentials):
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "credential"), "msg": reason}])


@router.get("/instances", response_model=list[InstanceOut], responses=errors.VIEWER)
async def list_instances(session: SessionDep, _: ViewerDep, engine: Engine | None = None, tag: TagSelectors = None,
                         enabled: bool | None = None, server: ServerFilter = None) -> list[InstanceOut]:
    try:
        tags = parse_tag_selectors(tag)
    except ValueError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    stmt = filtered(select(Instance, Server.name).join(Server, Server.id == Instance.server_id), engine=engine,
                    tags=tags, enabled=enabled).order_by(Instance.name)
    if server is not None:
        stmt = stmt.where(Server.name == server)
    return [await instance_out(session, inst, name) for inst, name in await session.execute(stmt)]


@router.post("/instances", response_model=InstanceOut, status_code=201, responses=errors.ADMIN | errors.responses(409))
async def create_instance(body: InstanceIn, session: SessionDep, settings: SettingsDep,
                          who: AdminDep) -> InstanceOut:
    check_credential(body.credential, settings)
    if (await session.execute(select(Instance.id).where(Instance.name == body.name))).first():
        raise HTTPException(status.HTTP_409_CONFLICT, f"an instance named {body.name!r} exists; PATCH it instead")
    await upsert_instances(session, [body], who.name, action="instance.create")
    return await instance_out(session, await _get(session, body.name))


@router.get("/instances/{name}", response_model=InstanceOut, responses=errors.VIEWER | errors.responses(404))
async def get_instance(name: InstanceName, session: SessionDep, _: ViewerDep) -> InstanceOut:
    return await instance_out(session, await _get(session, name))


@router.patch("/instances/{name}", response_model=InstanceOut, responses=errors.ADMIN | errors.responses(404, 409))
async def update_instance(name: InstanceName, body: InstancePatch, session: SessionDep, settings: SettingsDep,
                          who: AdminDep) -> InstanceOut:
    # Only a reference this request sends is checked: a stored one outside the allow-list is
    # refused when it is resolved, and must not block fixing the instance's other fields.
    check_credential(body.credential, settings)
    inst = await _get(session, name)
    merged = merged_body(InstanceIn, {
        "name": inst.name, "engine": inst.engine, "host": inst.host, "port": inst.port, "dbname": inst.dbname,
        "user": inst.user, "credential": inst.credential, "tls_mode": inst.tls_mode, "tags": inst.tags,
        "enabled": inst.enabled, "overrides": inst.overrides, "schemas": inst.schemas,
        **body.model_dump(exclude_unset=True)})
    await upsert_instances(session, [merged], who.name, action="instance.update")
    await session.refresh(inst)
    return await instance_out(session, inst)


@router.delete("/instances/{name}", status_code=204, response_class=Response,
               responses=errors.ADMIN | errors.responses(404))
async def delete_instance(name: InstanceName, session: SessionDep, who: AdminDep) -> Response:
    inst = await _get(session, name)
    # Its findings go with it (cascade); the alerts they raised are resolved in the same
    # transaction, or the dispatcher would keep them firing for an instance that no longer exists.
    await retire_findings(session, inst, "instance deleted")
    await session.flush()
    await session.delete(inst)
    session.add(AuditLog(actor=who.name, action="instance.delete", target=name, details={}))
    return Response(status_code=204)


IMPORT_MAX_BYTES = 10_000_000  # a 5,000-instance YAML file is about 1 MB


@router.post("/instances:import", response_model=ImportReportOut, response_model_exclude_none=True,
             openapi_extra={"requestBody": {
                 "required": True, "description": "the YAML (servers and/or instances) or CSV file", **_FILE_BODY}},
             responses=errors.ADMIN | errors.responses(400, 409, 413))
async def import_instances(request: Request, session: SessionDep, settings: SettingsDep, who: AdminDep,
                           format: Literal["yaml", "csv"] | None = None) -> ImportReportOut:
    """Body: the YAML (servers and/or instances) or CSV file. All or nothing; re-importing the same
    file changes nothing. `errors` in a 422 or 409 names each line and field."""
    body = await request.body()
    if len(body) > IMPORT_MAX_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body: over {IMPORT_MAX_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body: not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "the inventory file is empty"}])
    if "\x00" in text:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: a NUL byte is not text")
    fmt = format or io.format_for("", request.headers.get("content-type", ""))
    try:
        inventory = io.parse_inventory(text, fmt, settings.credentials)
        if not inventory.servers and not inventory.instances:
            raise RequestValidationError([{"type": "value_error", "loc": ("body",),
                                           "msg": "the file lists no servers and no instances"}])
        report = await upsert_inventory(session, inventory, who.name)
    except io.InventoryFileError as e:
        raise errors.line_errors(status.HTTP_422_UNPROCESSABLE_CONTENT, "the file is refused", e.errors,
                                 "inventory_file") from None
    except InventoryConflict as e:
        raise errors.line_errors(status.HTTP_409_CONFLICT, "the store conflicts", e.errors, "conflict") from None
    except IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, "a concurrent change conflicted; nothing was imported") from None
    return ImportReportOut.model_validate(report.as_dict())


@router.get("/instances:export", response_class=Response, responses={200: _FILE_BODY} | errors.VIEWER)
async def export_instances(session: SessionDep, _: ViewerDep, format: Literal["yaml", "csv"] = "yaml") -> Response:
    """YAML: servers with their databases (entries that connect differently under `instances:`);
    CSV: one row per instance."""
    insts = list((await session.execute(select(Instance).order_by(Instance.name))).scalars())
    if format == "csv":
        return Response(io.dump_csv(insts), media_type="text/csv")
    servers = (await session.execute(select(Server).order_by(Server.name))).scalars()
    return Response(io.dump_yaml(insts, servers), media_type="application/yaml")
