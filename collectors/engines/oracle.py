"""Oracle through python-oracledb in thin mode (no Instant Client), async API, read-only queries.

Server versions are integers ``major * 10_000 + minor * 100 + fourth field`` of the connection's
version string (the fourth field is the 12c patch set: 12.1.0.2), so 19.3.0.0.0 is 190300 and
12.2.0.1.0 is 120201 (DBA_INDEX_USAGE appeared in 12.2, so index advice keys its SQL at 120200).
Oracle has no read-only session setting that does not freeze a snapshot for the whole session
(SET TRANSACTION READ ONLY), so the adapter refuses anything but SELECT/WITH, and the monitoring
account should hold only SELECT_CATALOG_ROLE.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import oracledb

from collectors.engines.base import LoginFailed, SessionLimits, Target, Unreachable, redact, register_adapter

# ORA-01017 invalid username/password, ORA-28000 account locked, ORA-28001 password expired,
# ORA-01005 null password, ORA-01045 lacks CREATE SESSION, ORA-28009 SYS must connect as SYSDBA.
_LOGIN_ORA_CODES = {1017, 28000, 28001, 1005, 1045, 28009}
_READ_ONLY = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(select|with)\b", re.I | re.S)

ROLE_SQL = "SELECT database_role FROM v$database"


def version_number(version: str) -> int:
    """'19.3.0.0.0' -> 190300, '12.2.0.1.0' -> 120201, '23.4.0.24.5' -> 230424."""
    parts = [int(p) for p in re.findall(r"\d+", version or "")[:4]]
    parts += [0] * (4 - len(parts))
    major, minor, _, patch = parts
    return major * 10_000 + min(minor, 99) * 100 + min(patch, 99)


class OracleConnection:
    engine = "oracle"

    def __init__(self, conn: Any, server_version: int, is_standby: bool):
        self.raw = conn
        self.server_version = server_version
        self.is_standby = is_standby

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if not _READ_ONLY.match(sql):
            raise ValueError("dbfleet sessions only run SELECT statements on Oracle")
        with self.raw.cursor() as cur:
            await cur.execute(sql, list(args))
            # Oracle upper-cases unquoted names; collectors use lower-case keys on every engine.
            names = [d[0].lower() for d in cur.description or ()]
            return [dict(zip(names, row)) for row in await cur.fetchall()]

    async def explain_plan(self, sql: str, statement_id: str, binds: dict[str, None],
                           reads: tuple[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """EXPLAIN PLAN of one statement the caller has vetted as a SELECT (it is planned, never run),
        then the two reads of its PLAN_TABLE rows (bound to statement_id); the rows are rolled back."""
        try:
            with self.raw.cursor() as cur:
                await cur.execute(f"EXPLAIN PLAN SET STATEMENT_ID = '{statement_id}' FOR {sql}", binds)
            return (await self.fetch(reads[0], statement_id), await self.fetch(reads[1], statement_id))
        finally:
            await self.raw.rollback()

    async def close(self) -> None:
        if self.raw.is_healthy():
            await self.raw.close()

    def is_closed(self) -> bool:
        return not self.raw.is_healthy()


def classify(target: Target, error: BaseException) -> LoginFailed | Unreachable:
    """Map an oracledb (or socket) error to the finding a DBA should see, redacted."""
    info = error.args[0] if error.args else None
    code = getattr(info, "code", 0) or 0
    message = redact(str(getattr(info, "message", None) or error), target.password)
    message = message.split("\nHelp:")[0]
    if code in _LOGIN_ORA_CODES:
        return LoginFailed(target, f"login failed: {message}")
    return Unreachable(target, f"cannot connect to {target.host}:{target.port}: {message}")


def connect_params(target: Target, limits: SessionLimits) -> dict[str, Any]:
    secure = target.tls_mode in ("require", "verify-ca", "verify-full")
    return {
        "user": target.user,
        "password": target.password,
        "host": target.host,
        "port": target.port,
        "service_name": target.dbname or target.options.get("service_name") or None,
        "protocol": "tcps" if secure else "tcp",
        "ssl_server_dn_match": target.tls_mode == "verify-full",
        "tcp_connect_timeout": limits.connect_timeout_s,
        "retry_count": 0,
        "program": limits.application_name,
        "driver_name": limits.application_name,
    }


async def connect_oracle(target: Target, limits: SessionLimits) -> OracleConnection:
    try:
        conn = await asyncio.wait_for(
            oracledb.connect_async(**connect_params(target, limits)), limits.connect_timeout_s + 2
        )
    except (oracledb.Error, OSError) as e:
        raise classify(target, e) from None
    except asyncio.TimeoutError:
        raise Unreachable(target, f"cannot connect to {target.host}:{target.port}: connect timeout") from None
    try:
        conn.call_timeout = int(limits.statement_timeout_ms)  # per round trip, in ms
        # Sent with the next round trip: V$SESSION shows who is asking.
        conn.module = limits.application_name
        conn.action = limits.application_name
        conn.client_identifier = limits.application_name
        version = version_number(conn.version)
        with conn.cursor() as cur:
            await cur.execute(ROLE_SQL)
            row = await cur.fetchone()
    except BaseException:
        await conn.close()
        raise
    return OracleConnection(conn, version, bool(row and "STANDBY" in str(row[0]).upper()))


class OracleWritable:
    """A writable session for audited admin DDL (partition apply); collectors never get one.
    Oracle commits DDL implicitly, so there is no transaction to manage."""

    def __init__(self, conn: Any):
        self.raw = conn
        self.server_version = version_number(conn.version)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self.raw.cursor() as cur:
            await cur.execute(sql, list(args))
            names = [d[0].lower() for d in cur.description or ()]
            return [dict(zip(names, row)) for row in await cur.fetchall()]

    async def execute(self, sql: str) -> None:
        with self.raw.cursor() as cur:
            await cur.execute(sql)

    async def close(self) -> None:
        if self.raw.is_healthy():
            await self.raw.close()


def ddl_lock_timeout_s(lock_timeout_ms: int) -> int:
    """DDL_LOCK_TIMEOUT is whole seconds (0 = NOWAIT); round up so a short timeout still waits a little."""
    return max(0, min(1_000_000, math.ceil(lock_timeout_ms / 1000)))


async def open_writable(target: Target, limits: SessionLimits, action: str = "partition apply") -> OracleWritable:
    """A writable session whose DDL waits at most the lock timeout for its table lock
    (ALTER SESSION SET DDL_LOCK_TIMEOUT); raises ConnectFailed like connect()."""
    try:
        conn = await asyncio.wait_for(
            oracledb.connect_async(**connect_params(target, limits)), limits.connect_timeout_s + 2
        )
    except (oracledb.Error, OSError) as e:
        raise classify(target, e) from None
    except asyncio.TimeoutError:
        raise Unreachable(target, f"cannot connect to {target.host}:{target.port}: connect timeout") from None
    try:
        conn.call_timeout = int(limits.statement_timeout_ms)
        conn.module = limits.application_name
        conn.action = action
        conn.client_identifier = limits.application_name
        with conn.cursor() as cur:
            await cur.execute(f"ALTER SESSION SET DDL_LOCK_TIMEOUT = {ddl_lock_timeout_s(limits.lock_timeout_ms)}")
    except BaseException:
        await conn.close()
        raise
    return OracleWritable(conn)


register_adapter("oracle", connect_oracle)
