"""Credential references resolved at connect time; secrets are never stored or logged.

A reference is `scheme:rest`. Resolvers form a dict registry so the cloud integrations can add
theirs (aws-sm, aws-iam) without special cases here.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path


class CredentialError(Exception):
    """A reference that cannot be resolved; the message names the reference, never a secret."""


Resolver = Callable[[str, dict], Awaitable[str]]
_RESOLVERS: dict[str, Resolver] = {}


def register_resolver(scheme: str, resolver: Resolver) -> None:
    _RESOLVERS[scheme] = resolver


async def _from_env(rest: str, instance: dict) -> str:
    value = os.environ.get(rest)
    if value is None:
        raise CredentialError(f"environment variable {rest} is not set")
    return value


async def _from_file(rest: str, instance: dict) -> str:
    try:
        return Path(rest).read_text().rstrip("\n")
    except OSError as e:
        raise CredentialError(f"cannot read credential file {rest}: {e.strerror}") from None


register_resolver("env", _from_env)
register_resolver("file", _from_file)


async def resolve_credential(reference: str | None, instance: dict | None = None) -> str | None:
    """The secret behind a reference; `instance` (host, port, user, cloud) helps token schemes."""
    if not reference:
        return None
    scheme, _, rest = reference.partition(":")
    resolver = _RESOLVERS.get(scheme)
    if resolver is None:
        raise CredentialError(f"unknown credential scheme {scheme!r} in reference {reference!r}")
    return await resolver(rest, instance or {})
