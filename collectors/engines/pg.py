"""PostgreSQL (and Aurora PostgreSQL) through asyncpg, in a read-only, time-limited session."""

from __future__ import annotations

import asyncio
import re
import ssl as ssl_module
from typing import Any

import asyncpg

from collectors.engines.base import LoginFailed, SessionLimits, Target, Unreachable, register_adapter
from collectors.spec import Identity, NodeRole

_LOGIN_ERRORS = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


class PgConnection:
    engine = "postgres"

    def __init__(self, conn: asyncpg.Connection, server_version: int, is_standby: bool):
        self.raw = conn
        self.server_version = server_version
        self.is_standby = is_standby

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self.raw.fetch(sql, *args)
        if not rows:
            return []
        # zip over the column names once per result: dict(record) looks every column up by name
        # (a quarter slower). With a repeated column name the last value wins, as with dict(record).
        keys = tuple(rows[0].keys())
        return [dict(zip(keys, r)) for r in rows]

    async def identify(self) -> Identity:
        """Read the server's identity now (a failover changes it under a held session)."""
        row = await self.raw.fetchrow(IDENTITY_SQL)
        self.is_standby = row["standby"]
        return identity_of(row)

    async def close(self) -> None:
        if not self.raw.is_closed():
            await self.raw.close(timeout=2)

    def is_closed(self) -> bool:
        return self.raw.is_closed()

    def terminate(self) -> None:
        self.raw.terminate()


# pg_control_system() is executable by anyone; pg_stat_wal_receiver shows its sender and conninfo
# (passwords obfuscated) to superusers and pg_read_all_stats, else NULLs. A standby's walsender on
# the primary is named by application_name from its conninfo, else cluster_name (12+), else walreceiver.
IDENTITY_SQL = """
select current_setting('server_version_num')::int as v, pg_is_in_recovery() as standby,
       (select system_identifier::text from pg_control_system()) as server_id,
       current_database() as database, coalesce(r.status, '') as receiver_status,
       coalesce(r.sender_host, '') as sender_host, coalesce(r.sender_port, 0) as sender_port,
       coalesce(r.conninfo, '') as conninfo, current_setting('cluster_name') as cluster_name
from (select 1) as one left join pg_stat_wal_receiver r on true
"""
_APPLICATION_NAME = re.compile(r"(?:^|\s|[?&])application_name=('(?:[^'\\]|\\.)*'|[^\s&]+)")


def identity_of(row: Any) -> Identity:
    standby = bool(row["standby"])
    stream_name = ""
    if standby:
        match = _APPLICATION_NAME.search(row["conninfo"] or "")
        stream_name = (match.group(1).strip("'") if match else "") or row["cluster_name"] or "walreceiver"
    return Identity(role=NodeRole.standby if standby else NodeRole.primary, server_id=row["server_id"] or "",
                    database=row["database"], upstream_host=row["sender_host"], upstream_port=int(row["sender_port"]),
                    upstream_streaming=row["receiver_status"] == "streaming", stream_name=stream_name,
                    read_only=standby)


def _ssl_for(mode: str) -> Any:
    if mode in ("disable", "allow", "prefer", "require"):
        return mode
    ctx = ssl_module.create_default_context()
    ctx.check_hostname = mode == "verify-full"
    return ctx


def session_settings(limits: SessionLimits) -> dict[str, str]:
    """Server settings every dbfleet session starts with."""
    return {
        "application_name": limits.application_name,
        "statement_timeout": str(limits.statement_timeout_ms),
        "lock_timeout": str(limits.lock_timeout_ms),
        "idle_in_transaction_session_timeout": "60000",
        "default_transaction_read_only": "on",
    }


async def connect_pg(target: Target, limits: SessionLimits) -> PgConnection:
    try:
        conn = await asyncpg.connect(
            host=target.host,
            port=target.port,
            user=target.user or None,
            password=target.password,
            database=target.dbname or None,
            timeout=limits.connect_timeout_s,
            ssl=_ssl_for(target.tls_mode),
            server_settings=session_settings(limits),
            statement_cache_size=0 if target.options.get("pgbouncer") else limits.statement_cache_size,
        )
    except _LOGIN_ERRORS as e:
        raise LoginFailed(target, f"login failed: {e}") from None
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        reason = "connect timeout" if isinstance(e, asyncio.TimeoutError) else str(e) or type(e).__name__
        raise Unreachable(target, f"cannot connect to {target.host}:{target.port}: {reason}") from None
    try:
        row = await conn.fetchrow(IDENTITY_SQL)
    except BaseException:
        conn.terminate()
        raise
    return PgConnection(conn, row["v"], row["standby"])


register_adapter("postgres", connect_pg)
