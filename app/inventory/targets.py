"""An inventory entry as the collectors' adapters see it: a Target, and its password.

One place for every caller that opens a session on a monitored database (the sweep, the live
API, partition maintenance, data quality checks), so each resolves credentials the same way:
only when a session is opened, only from where the credential allow-list says, never stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from app.inventory import aws_credentials  # noqa: F401 - registers the aws-sm and aws-iam credential schemes
from app.inventory.credentials import resolve_credential
from app.models import Instance
from app.settings import Settings
from collectors.engines.base import Target


def target_of(inst: Instance) -> Target:
    """The entry's address, database, user, TLS mode and cloud options; no password."""
    return Target(name=inst.name, engine=inst.engine, host=inst.host, port=inst.port, dbname=inst.dbname,
                  user=inst.user, tls_mode=inst.tls_mode, options=dict(inst.cloud or {}))


def _identity(inst: Instance) -> dict:
    # What token schemes (aws-iam) need to sign for this entry.
    return {"name": inst.name, "engine": inst.engine, "host": inst.host, "port": inst.port, "user": inst.user,
            "cloud": inst.cloud}


def password_for(inst: Instance, settings: Settings | None = None) -> Callable[[], Awaitable[str | None]]:
    """The entry's password, resolved only when it is called (at connect time)."""
    identity = _identity(inst)

    async def password() -> str | None:
        return await resolve_credential(inst.credential, identity, allowed=settings.credentials if settings else None)

    return password


async def target_for(inst: Instance, settings: Settings | None = None) -> Target:
    """The Target with its password resolved now, for a session opened right away (never stored).
    Without settings, the process's configured allow-list applies."""
    return replace(target_of(inst), password=await password_for(inst, settings)())
