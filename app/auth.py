"""API keys: generated once, stored hashed, each with a role."""

from __future__ import annotations

import hashlib
import secrets
from enum import IntEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import func

from app.models import ApiKey


class Role(IntEnum):
    """Ordered: each role can do everything the roles below it can."""

    viewer = 1
    operator = 2
    admin = 3


def hash_key(key: str) -> str:
    # Keys are 32 random bytes, so a fast hash is enough; there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(session: AsyncSession, name: str, role: Role) -> str:
    """Store a new key's hash and return the key itself, which is shown exactly once."""
    key = "dbf_" + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, role=role.name, prefix=key[:10], key_hash=hash_key(key)))
    await session.flush()
    return key


async def principal_for(session: AsyncSession, key: str) -> ApiKey | None:
    row = (await session.execute(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )).scalar_one_or_none()
    if row is not None:
        await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=func.now()))
    return row
