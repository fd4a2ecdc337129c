"""Credential references resolved at connect time; secrets are never stored or logged.

A reference is `scheme:rest`. Resolvers form a dict registry so the cloud integrations can add
theirs (aws-sm, aws-iam) without special cases here. An instance's `env:` and `file:` references
must also be inside the allow-list (settings `credentials`): checked where a reference enters
(import, API) and again here before anything is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from app.settings import CredentialSettings


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
        # The real path is what the allow-list checked; reading it (not `rest`) leaves no window
        # for a symlink swapped in between.
        return Path(os.path.realpath(rest)).read_text().rstrip("\n")
    except OSError as e:
        raise CredentialError(f"cannot read credential file {rest}: {e.strerror}") from None


register_resolver("env", _from_env)
register_resolver("file", _from_file)


def _inside(path: str, dirs: list[str]) -> bool:
    real = os.path.realpath(path)
    # Relative directories mean nothing for a service (config check reports them): never a match.
    roots = [os.path.realpath(d) for d in dirs if os.path.isabs(d)]
    return any(real != root and os.path.commonpath([real, root]) == root for root in roots)


def refusal(reference: str | None, allowed: CredentialSettings) -> str:
    """Why an instance may not use this reference, or '' when it may. Names the allow-list, never
    the reference, so a password pasted into the field is not echoed back."""
    scheme, _, rest = (reference or "").partition(":")
    if scheme == "env" and not any(p and rest.startswith(p) for p in allowed.env_prefixes):
        if not allowed.env_prefixes:
            return "env: references are not allowed (credentials.env_prefixes is empty)"
        return ("env: references must name a variable starting with "
                f"{' or '.join(allowed.env_prefixes)} (credentials.env_prefixes)")
    if scheme == "file" and not _inside(rest, allowed.file_dirs):
        if not allowed.file_dirs:
            return "file: references are not allowed (credentials.file_dirs is empty)"
        return (f"file: references must point inside {' or '.join(allowed.file_dirs)} (credentials.file_dirs; "
                "symlinks and '..' are resolved first)")
    return ""


def configured_allow_list() -> CredentialSettings:
    from app.settings import get_settings

    return get_settings().credentials


async def resolve_credential(reference: str | None, instance: dict | None = None,
                             allowed: CredentialSettings | None = None) -> str | None:
    """The secret behind a reference; `instance` (host, port, user, cloud) helps token schemes.

    With `instance` (an instance's credential) or `allowed`, a reference outside the allow-list
    (`allowed`, else the process's settings) is refused before anything is read. References in
    the configuration itself (sink keys, cloud secrets) are the operator's and are not limited."""
    if not reference:
        return None
    if instance is not None or allowed is not None:
        if reason := refusal(reference, allowed or configured_allow_list()):
            raise CredentialError(reason)
    scheme, colon, rest = reference.partition(":")
    resolver = _RESOLVERS.get(scheme)
    if resolver is None:
        # Never the reference itself: a secret pasted where its reference belongs would be echoed
        # into logs and the outbox. A scheme-like word before ':' is safe to name.
        if colon and re.fullmatch(r"[a-z][a-z0-9-]{0,15}", scheme):
            raise CredentialError(f"unknown credential scheme {scheme!r}; use one of {', '.join(sorted(_RESOLVERS))}")
        raise CredentialError(f"not a credential reference (scheme:rest, e.g. env:VAR); known schemes: "
                              f"{', '.join(sorted(_RESOLVERS))}")
    return await resolver(rest, instance or {})
