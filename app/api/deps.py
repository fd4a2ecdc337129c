"""Shared route dependencies: the store session (committed at the request boundary) and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.params import refuse_invalid_body
from app.auth import Role, principal_for
from app.db import Store
from app.settings import Settings


# async, though they only read app.state: FastAPI runs a plain `def` dependency in a worker
# thread, two thread hops on every request.
async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(store: Annotated[Store, Depends(get_store)]) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    async with store.sessions() as session, session.begin():
        yield session


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    key_id: int | None = None  # the API key this request is signed with


async def get_principal(
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    key = await principal_for(session, creds.credentials)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return Principal(name=key.name, role=Role[key.role], key_id=key.id)


def require(role: Role):
    """A dependency that admits callers with at least `role`."""

    async def check(principal: Annotated[Principal, Depends(get_principal)], request: Request) -> Principal:
        if principal.role < role:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"this needs the {role.name} role; key '{principal.name}' is {principal.role.name}")
        refuse_invalid_body(request)  # the caller is admitted: now a 422 for a body the document refuses
        return principal

    return check


ViewerDep = Annotated[Principal, Depends(require(Role.viewer))]
OperatorDep = Annotated[Principal, Depends(require(Role.operator))]
AdminDep = Annotated[Principal, Depends(require(Role.admin))]
