"""Live troubleshooting, engine-neutral: what each engine family offers the live API.

An engine's activity module registers one LiveOps: its sessions now (the engine-neutral session
dicts its activity collector builds), the plan of one already-vetted SELECT, and a kill confirmed
by the session's start time. The API looks the family up here and never branches on engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collectors.common.versions import closest_lower_or_raise
from collectors.engines.base import SessionLimits, Target
from collectors.registry import ENGINE_FAMILY, all_specs
from collectors.spec import Connection


class PlanRefused(ValueError):
    """The text cannot be planned as given (placeholders with no values, or the server said no)."""


class NotOnThisEngine(ValueError):
    """The engine (or its version) has no such operation, e.g. cancel without kill on SQL Server."""


Sessions = Callable[[Connection], Awaitable[list[dict[str, Any]]]]
# (connection, vetted SELECT text, analyze) -> {"plan": JSON-able, "text": str}
Explain = Callable[[Connection, str, bool], Awaitable[dict[str, Any]]]
# (target, limits, session id, its start time, terminate?) -> whether the confirmed session was killed
Kill = Callable[[Target, SessionLimits, int, datetime, bool], Awaitable[bool]]


def _as_is(text: str) -> str:
    return text


@dataclass(frozen=True)
class LiveOps:
    family: str
    dialect: str          # sqlglot's name for the engine's SQL, to vet EXPLAIN texts
    sessions: Sessions
    explain: Explain
    kill: Kill
    # The text as sqlglot can read it, for vetting only (Oracle's :1 binds); the server gets the original.
    for_parsing: Callable[[str], str] = _as_is


_LIVE: dict[str, LiveOps] = {}


async def sessions_from(conn: Connection, sql: Mapping[int, str],
                        session: Callable[[Mapping[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """The engine-neutral sessions of one version-keyed query's rows (what the activity collector reads)."""
    rows = await conn.fetch(closest_lower_or_raise(sql, conn.server_version, f"activity needs {conn.engine}"))
    return [session(r) for r in rows]


def register_live(ops: LiveOps) -> LiveOps:
    if ops.family in _LIVE and _LIVE[ops.family] is not ops:
        raise ValueError(f"live operations for {ops.family} registered twice")
    _LIVE[ops.family] = ops
    return ops


def live_ops(engine: str) -> LiveOps | None:
    """The live operations of an inventory engine's family, None where it has none."""
    all_specs()  # importing the engine packages registers their live operations
    return _LIVE.get(ENGINE_FAMILY.get(engine, engine))


# PostgreSQL 57014 query_canceled (statement_timeout); MySQL 3024 max_execution_time and MariaDB 1969
# max_statement_time; ODBC HYT00 query timeout; Oracle DPY-4024 call timeout / ORA-01013 user cancel.
_TIMEOUT_CODES = {"57014", "HYT00", "HYT01", 3024, 1969}


def is_statement_timeout(error: BaseException) -> bool:
    """Whether a driver error means the session's statement timeout ended the statement."""
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return True
    if getattr(error, "sqlstate", None) in _TIMEOUT_CODES:
        return True
    first = error.args[0] if error.args else None
    if isinstance(first, (int, str)) and first in _TIMEOUT_CODES:
        return True
    text = str(error)
    return "DPY-4024" in text or "ORA-01013" in text
