"""Held-open connections, one per instance, reused across collectors and sweeps.

Connection setup dominates a sweep (about 5x on a local fleet), so a worker keeps one session per
instance, serialises collectors on it, reopens it when it breaks, and backs off exponentially
from an instance that keeps failing so that it is not hammered every sweep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from collectors.engines.base import ConnectFailed, CredentialUnavailable, SessionLimits, Target, connect
from collectors.spec import Connection


class BackingOff(ConnectFailed):
    """The instance failed recently; we do not try again until its backoff has passed."""


@dataclass(slots=True)
class _Held:
    target: Target
    conn: Connection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


class ConnectionPool:
    def __init__(self, limits: SessionLimits = SessionLimits(), backoff_base_s: float = 30.0,
                 backoff_max_s: float = 1800.0):
        self.limits = limits
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return sum(1 for h in self._held.values() if h.conn is not None)

    def backoff_remaining(self, name: str) -> float:
        held = self._held.get(name)
        return max(0.0, held.retry_at - time.monotonic()) if held else 0.0

    @asynccontextmanager
    async def session(self, target: Target,
                      password: Callable[[], Awaitable[str | None]] | None = None) -> AsyncIterator[Connection]:
        """The instance's held connection, exclusively for the duration of the block.

        `password` is called only when a connection must be opened, so secrets and tokens are
        fetched at connect time and not on every sweep.
        """
        held = self._held.get(target.name)
        if held is None or held.target != target:
            if held is not None and held.conn is not None:
                await _quietly_close(held.conn)
            held = self._held[target.name] = _Held(target)
        async with held.lock:
            if held.conn is None or _is_closed(held.conn):
                held.conn = await self._open(held, password)
            try:
                yield held.conn
            except ConnectFailed:  # the caller found the session dead (no answer): never reuse it
                _abort(held.conn)
                held.conn = None
                raise
            except (OSError, ConnectionError) as e:
                await self._drop(held, str(e))
                raise
            except Exception:
                if _is_closed(held.conn):
                    await self._drop(held, "connection lost")
                raise

    async def _open(self, held: _Held, password: Callable[[], Awaitable[str | None]] | None) -> Connection:
        wait = held.retry_at - time.monotonic()
        if wait > 0:
            raise BackingOff(held.target, f"{held.last_error} (next attempt in {wait:.0f}s, "
                                          f"after {held.failures} consecutive failures)")
        target = held.target
        try:
            if password is not None:
                try:
                    target = dataclasses.replace(target, password=await password())
                except Exception as e:  # noqa: BLE001 - any resolver failure means we cannot log in
                    raise CredentialUnavailable(target, f"cannot resolve credential: {e}") from None
            conn = await connect(target, self.limits)
        except ConnectFailed as e:
            held.failures += 1
            held.last_error = str(e)
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (held.failures - 1))
            held.retry_at = time.monotonic() + delay
            raise
        held.failures, held.retry_at, held.last_error = 0, 0.0, ""
        return conn

    async def _drop(self, held: _Held, reason: str) -> None:
        if held.conn is not None:
            await _quietly_close(held.conn)
        held.conn = None

    async def forget(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is not None and held.conn is not None:
            await _quietly_close(held.conn)

    async def close(self) -> None:
        for name in list(self._held):
            await self.forget(name)


def _is_closed(conn: Connection) -> bool:
    is_closed = getattr(conn, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


def _abort(conn: Connection) -> None:
    """Drop a session at once, without the goodbye a server that does not answer would never read."""
    terminate = getattr(conn, "terminate", None)
    if callable(terminate):
        terminate()
    else:
        asyncio.ensure_future(_quietly_close(conn))


async def _quietly_close(conn: Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 3)
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
        pass
