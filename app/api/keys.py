"""API keys: admins create (the key is shown once), list and revoke them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from app.api import errors
from app.api.deps import AdminDep, SessionDep
from app.api.params import KeyId, text, StrictJsonRoute
from app.auth import Role, create_key, hash_key
from app.models import ApiKey, AuditLog

router = APIRouter(prefix="/api/v1", tags=["keys"], route_class=StrictJsonRoute)


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: text(200, min_length=1)
    role: Literal["viewer", "operator", "admin"]


class NewKey(BaseModel):
    id: int
    name: str
    role: Literal["viewer", "operator", "admin"]
    key: str = Field(description="the key itself; it is shown this once and stored only as a hash")
    note: str


class KeyOut(BaseModel):
    id: int
    name: str
    role: Literal["viewer", "operator", "admin"]
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@router.post("/keys", status_code=201, response_model=NewKey, responses=errors.ADMIN)
async def new_key(body: KeyIn, session: SessionDep, who: AdminDep) -> NewKey:
    key = await create_key(session, body.name, Role[body.role])
    key_id = (await session.execute(select(ApiKey.id).where(ApiKey.key_hash == hash_key(key)))).scalar_one()
    session.add(AuditLog(actor=who.name, action="key.create", target=body.name, details={"role": body.role}))
    return NewKey(id=key_id, name=body.name, role=body.role, key=key, note="shown once; store it now")


@router.get("/keys", response_model=list[KeyOut], responses=errors.ADMIN)
async def list_keys(session: SessionDep, _: AdminDep) -> list[KeyOut]:
    rows = (await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars()
    return [KeyOut(id=k.id, name=k.name, role=k.role, prefix=k.prefix, created_at=k.created_at,
                   last_used_at=k.last_used_at, revoked_at=k.revoked_at) for k in rows]


@router.delete("/keys/{key_id}", status_code=204, response_class=Response,
               responses=errors.ADMIN | errors.responses(404, 409))
async def revoke_key(key_id: KeyId, session: SessionDep, who: AdminDep) -> Response:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no key {key_id}")
    if key_id == who.key_id:
        # Nobody locks themselves out by accident: revoke a key with another admin key.
        raise HTTPException(status.HTTP_409_CONFLICT, f"key {key_id} signs this request; revoke it with another "
                                                      "admin key")
    key.revoked_at = datetime.now(timezone.utc)
    session.add(AuditLog(actor=who.name, action="key.revoke", target=key.name, details={"id": key_id}))
    return Response(status_code=204)
