"""API keys: admins create (the key is shown once), list and revoke them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from app.api.deps import AdminDep, SessionDep
from app.auth import Role, create_key
from app.models import ApiKey, AuditLog

router = APIRouter(prefix="/api/v1", tags=["keys"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Literal["viewer", "operator", "admin"]


@router.post("/keys", status_code=201)
async def new_key(body: KeyIn, session: SessionDep, who: AdminDep) -> dict:
    key = await create_key(session, body.name, Role[body.role])
    session.add(AuditLog(actor=who.name, action="key.create", target=body.name, details={"role": body.role}))
    return {"name": body.name, "role": body.role, "key": key, "note": "shown once; store it now"}


@router.get("/keys")
async def list_keys(session: SessionDep, _: AdminDep) -> list[dict]:
    rows = (await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars()
    return [{"id": k.id, "name": k.name, "role": k.role, "prefix": k.prefix, "created_at": k.created_at,
             "last_used_at": k.last_used_at, "revoked_at": k.revoked_at} for k in rows]


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: int, session: SessionDep, who: AdminDep) -> None:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no key {key_id}")
    key.revoked_at = datetime.now(timezone.utc)
    session.add(AuditLog(actor=who.name, action="key.revoke", target=key.name, details={"id": key_id}))
