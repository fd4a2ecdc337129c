"""What an adapter needs to reach an instance, the errors it raises, and the adapter registry."""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collectors.registry import ENGINE_FAMILY
from collectors.spec import Connection


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Limits every collector session runs under, so nothing it does can block production."""

    connect_timeout_s: float = 5.0
    statement_timeout_ms: int = 10_000
    lock_timeout_ms: int = 1_000
    application_name: str = "dbfleet"
    # Prepared statements a PostgreSQL session keeps (asyncpg's statement_cache_size). Each costs
    # about 4 KB per session; 0 costs one more round trip per statement instead: at 5,000 held
    # sessions memory is the limit (bench/scale.py --statement-cache measures both).
    statement_cache_size: int = 0


@dataclass(frozen=True, slots=True)
class Target:
    """One monitored instance as an adapter sees it; the password is already resolved."""

    name: str
    engine: str
    host: str
    port: int
    dbname: str = ""
    user: str = ""
    # Not part of equality: a rotated password or a fresh IAM token must not force a reconnect.
    password: str | None = field(default=None, repr=False, compare=False)
    tls_mode: str = "prefer"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return ENGINE_FAMILY.get(self.engine, self.engine)


class ConnectFailed(Exception):
    """The instance could not be reached or refused us; `check` names the finding to raise."""

    check = "instance_unreachable"

    def __init__(self, target: Target, message: str):
        self.target_name = target.name
        super().__init__(redact(message, target.password))


class Unreachable(ConnectFailed):
    check = "instance_unreachable"


class LoginFailed(ConnectFailed):
    check = "login_failed"


class CredentialUnavailable(ConnectFailed):
    check = "credential_unavailable"


class DriverUnavailable(ConnectFailed):
    """No adapter for the engine, or its driver is not installed (an optional extra)."""

    check = "driver_unavailable"


def redact(message: str, *secrets: str | None) -> str:
    """Remove secrets (and anything shaped like password=...) from a driver's message."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return re.sub(r"(?i)(password|pwd|secret|token)=([^;\s]+)", r"\1=***", message)


Adapter = Callable[[Target, SessionLimits], Awaitable[Connection]]
_ADAPTERS: dict[str, Adapter] = {}
_MODULES = {"postgres": "pg", "mysql": "mysql", "sqlserver": "sqlserver", "oracle": "oracle"}


def register_adapter(family: str, adapter: Adapter) -> Adapter:
    _ADAPTERS[family] = adapter
    return adapter


async def connect(target: Target, limits: SessionLimits = SessionLimits()) -> Connection:
    """Open a read-only session to the target with the right adapter for its engine."""
    family = target.family
    if family not in _ADAPTERS:
        # Raised as a ConnectFailed so that one such instance becomes a finding on itself instead of
        # an exception that ends the sweep of the whole fleet.
        if family not in _MODULES:
            raise DriverUnavailable(target, f"no adapter for engine {target.engine!r}")
        try:
            importlib.import_module(f"collectors.engines.{_MODULES[family]}")
        except ImportError as e:
            if (e.name or "").split(".")[0] in ("collectors", "app"):
                raise  # our own code is broken: say so, never as "install the driver"
            raise DriverUnavailable(target, f"the {family} driver is not installed ({e.name or e}): "
                                            f"pip install 'dbfleet[{family}]'") from None
    return await _ADAPTERS[family](target, limits)
