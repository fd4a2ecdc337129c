"""Console sign-in: an API key (or a trusted reverse proxy's user header) buys a server-side
session; the cookie holds only a random token.

The store keeps the token's hash (a copied table row signs nobody in), the role comes from the key
on every request (a revoked key ends its sessions at once), and each session has its own CSRF token
that every state-changing form sends back.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated

from fastapi import Cookie, Depends, Form, HTTPException, Request, Response, status
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import SettingsDep, StoreDep, get_session
from app.auth import Role, create_key, principal_for
from app.models import ApiKey, WebSession
from app.settings import Settings
from app.web.peer import PEER_KEY

# Committed before the response leaves (scope "function"), not after it as the API's SessionDep:
# a browser follows a form's 303 at once, and the next page must see what the form changed.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

COOKIE = "dbfleet_session"
SESSION_TTL = timedelta(hours=8)  # a working day; signing in again costs one paste of the key


@dataclass(frozen=True)
class WebUser:
    name: str
    role: Role
    csrf_token: str

    def can(self, role: Role) -> bool:
        return self.role >= role


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(session: SessionDep, key: str) -> str | None:
    """A new session's token for a valid, unrevoked API key; None for anything else."""
    api_key = await principal_for(session, key.strip())
    if api_key is None:
        return None
    return await _new_session(session, api_key.id)


async def _new_session(session: SessionDep, key_id: int) -> str:
    token = secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)
    # Expired sessions are swept here, so the table stays as small as the number of people signed in.
    await session.execute(delete(WebSession).where(WebSession.expires_at < now))
    session.add(WebSession(token_hash=_hash(token), key_id=key_id, csrf_token=secrets.token_urlsafe(32),
                           expires_at=now + SESSION_TTL))
    await session.flush()
    return token


def socket_peer(request: Request) -> str | None:
    """The address that opened the connection (app/web/peer.py), never one a header claims."""
    peer = request.scope.get(PEER_KEY) or request.client
    return peer[0] if peer else None


def proxy_user(request: Request, settings: Settings) -> str | None:
    """The user a trusted reverse proxy vouches for; None without the option, from any other peer,
    or for a name that is not one (empty, too long, control characters)."""
    proxy = settings.console.proxy_sign_in
    if proxy is None or not (name := request.headers.get(proxy.header, "").strip()):
        return None
    try:
        peer = ipaddress.ip_address(socket_peer(request) or "")
    except ValueError:
        return None
    if not any(peer in net for net in proxy.trusted_proxies):
        return None
    return name if len(name) <= 190 and name.isprintable() else None


async def sign_in_proxy(session: SessionDep, settings: Settings, name: str) -> str | None:
    """A session for a proxy-vouched user. Each such user is an API key row `proxy:<name>` with
    a secret nobody holds: its role follows the settings on every sign-in, revoking it locks the
    user out, and the audit log names them as it names key holders."""
    proxy = settings.console.proxy_sign_in
    role = proxy.roles.get(name, proxy.role)
    key_name = f"proxy:{name}"
    # One first sign-in at a time per name: two at once (two tabs, two serve processes) each made
    # a key row, and the next lookup found two.
    await session.execute(text("select pg_advisory_xact_lock(hashtext('dbfleet.proxy_key'), hashtext(:name))"),
                          {"name": key_name})
    key = (await session.execute(select(ApiKey).where(ApiKey.name == key_name).order_by(ApiKey.id.desc())
                                 .limit(1))).scalar_one_or_none()
    if key is None:
        await create_key(session, key_name, Role[role])
        key = (await session.execute(select(ApiKey).where(ApiKey.name == key_name))).scalar_one()
    elif key.revoked_at is not None:
        return None
    key.role = role
    return await _new_session(session, key.id)


async def sign_out(session: SessionDep, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))


def set_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=int(SESSION_TTL.total_seconds()), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


_USER = """
select k.name, k.role, s.csrf_token from web_sessions s join api_keys k on k.id = s.key_id
where s.token_hash = $1 and s.expires_at > now() and k.revoked_at is null
"""


async def optional_user(request: Request, store: StoreDep, settings: SettingsDep,
                        token: Annotated[str | None, Cookie(alias=COOKIE)] = None) -> WebUser | None:
    # One plain query, not an ORM session: every page asks it, most pages need nothing else of the ORM.
    if not token:
        return None
    async with store.raw() as conn:
        row = await conn.fetchrow(_USER, _hash(token))
    if row is None:
        return None
    # Behind the proxy, the proxy says who is there: another user's cookie in this browser is not them.
    if (vouched := proxy_user(request, settings)) is not None and row["name"] != f"proxy:{vouched}":
        return None
    return WebUser(row["name"], Role[row["role"]], row["csrf_token"])


async def signed_in(user: Annotated[WebUser | None, Depends(optional_user)]) -> WebUser:
    """Pages need a session; without one the browser is sent to the sign-in form."""
    if user is None:
        raise HTTPException(status.HTTP_303_SEE_OTHER, "sign in first", headers={"Location": "/signin"})
    return user


UserDep = Annotated[WebUser, Depends(signed_in)]


def checked(user: WebUser, csrf: str, role: Role) -> WebUser:
    """The gate of every state-changing form: the session's CSRF token, then the role."""
    if not secrets.compare_digest(csrf.encode(), user.csrf_token.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form's CSRF token does not match this session")
    if not user.can(role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role.name} role; you are {user.role.name}")
    return user


CsrfField = Annotated[str, Form()]
