"""MySQL, MariaDB and Aurora MySQL through aiomysql, in a read-only, time-limited session."""

from __future__ import annotations

import asyncio
import re
import ssl as ssl_module
from typing import Any

import aiomysql
import pymysql

from collectors.engines.base import LoginFailed, SessionLimits, Target, Unreachable, register_adapter
from collectors.spec import Identity, NodeRole

# 1045 bad user/password, 1044 no access to the database, 1698 auth plugin refused (unix_socket),
# 1862 password expired: all need a credentials fix, not a network one.
_LOGIN_ERRNOS = {1044, 1045, 1698, 1862}
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, str]:
    """'10.6.11-MariaDB-log' -> (100611, 'mariadb'); '8.0.36' -> (80036, 'mysql').

    A MariaDB server may still prefix its handshake version with '5.5.5-' for old clients.
    """
    flavor = "mariadb" if "mariadb" in text.lower() else "mysql"
    text = text.removeprefix("5.5.5-")
    m = _VERSION_RE.search(text)
    if not m:
        raise ValueError(f"unrecognised server version {text!r}")
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    return major * 10000 + minor * 100 + patch, flavor


def session_statements(limits: SessionLimits, flavor: str) -> list[str]:
    """What every dbfleet session runs first: read-only, statement and lock timeouts."""
    lock_s = max(1, round(limits.lock_timeout_ms / 1000))
    if flavor == "mariadb":
        # MariaDB: max_statement_time in seconds, applies to every statement.
        timeout = f"SET SESSION max_statement_time = {limits.statement_timeout_ms / 1000:.3f}"
    else:
        # MySQL 5.7.8+: max_execution_time in ms, applies to read-only SELECTs (all we run).
        timeout = f"SET SESSION max_execution_time = {int(limits.statement_timeout_ms)}"
    return [
        "SET SESSION TRANSACTION READ ONLY",
        timeout,
        f"SET SESSION lock_wait_timeout = {lock_s}",
        f"SET SESSION innodb_lock_wait_timeout = {lock_s}",
    ]


def replica_status_sql(version: int) -> str:
    if version >= 100501 or 80022 <= version < 100000:
        return "SHOW REPLICA STATUS"
    return "SHOW SLAVE STATUS"


class MySQLConnection:
    engine = "mysql"

    def __init__(self, conn: aiomysql.Connection, server_version: int, flavor: str, is_standby: bool):
        self.raw = conn
        self.server_version = server_version
        self.flavor = flavor
        self.is_standby = is_standby

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        # A query cut off by a collector's timeout makes aiomysql close the session itself
        # ("Cancelled during execution"), so the pool sees is_closed() and reopens.
        async with self.raw.cursor(aiomysql.DictCursor) as cur:
            # Without args pymysql does no %-interpolation, so LIKE 'x%' in SQL text is safe.
            await cur.execute(sql, args or None)
            return list(await cur.fetchall())

    async def identify(self) -> Identity:
        """Read the server's identity now: a replica promoted (or re-pointed) shows on the next run."""
        [row] = await self.fetch(_IDENTITY_SQL[self.flavor])
        replica = await _replica_status(self)
        self.is_standby = replica is not None or str(row["iro"]) in ("1", "ON")
        server_id = row["uuid"] if self.flavor == "mysql" else f"mariadb:{row['host']}:{row['port']}:{row['sid']}"
        upstream = replica or {}
        return Identity(
            role=NodeRole.standby if self.is_standby else NodeRole.primary, server_id=str(server_id),
            database=row["db"] or "", upstream_host=str(_first(upstream, "Source_Host", "Master_Host") or ""),
            upstream_port=int(_first(upstream, "Source_Port", "Master_Port") or 0),
            upstream_streaming=_first(upstream, "Replica_IO_Running", "Slave_IO_Running") == "Yes",
            read_only=str(row["ro"]) in ("1", "ON"))

    async def close(self) -> None:
        if self.raw.closed:
            return
        try:
            await asyncio.wait_for(self.raw.ensure_closed(), 2)
        except (OSError, asyncio.TimeoutError, pymysql.err.Error):
            self.raw.close()

    def is_closed(self) -> bool:
        return self.raw.closed

    def terminate(self) -> None:
        self.raw.close()


def _ssl_for(mode: str) -> ssl_module.SSLContext | None:
    if mode in ("disable", "allow"):
        return None
    ctx = ssl_module.create_default_context()
    if mode not in ("verify-ca", "verify-full"):
        # prefer/require: encrypt without verifying; pymysql only uses TLS if the server offers it.
        ctx.check_hostname = False
        ctx.verify_mode = ssl_module.CERT_NONE
    else:
        ctx.check_hostname = mode == "verify-full"
    return ctx


async def open_raw(target: Target, limits: SessionLimits) -> aiomysql.Connection:
    """A plain autocommit aiomysql connection (no read-only session): for audited admin actions."""
    try:
        # aiomysql's connect_timeout covers the TCP connect only; a server that accepts and never
        # sends its handshake would hang us, so the whole login gets the same deadline.
        return await asyncio.wait_for(aiomysql.connect(
            host=target.host, port=target.port, user=target.user or None,
            password=target.password or "", db=target.dbname or None,
            connect_timeout=limits.connect_timeout_s, autocommit=True, charset="utf8mb4",
            program_name=limits.application_name, ssl=_ssl_for(target.tls_mode),
        ), limits.connect_timeout_s)
    except pymysql.err.OperationalError as e:
        errno = e.args[0] if e.args else 0
        if errno in _LOGIN_ERRNOS:
            raise LoginFailed(target, f"login failed: {e}") from None
        raise Unreachable(target, f"cannot connect to {target.host}:{target.port}: {e}") from None
    except (OSError, asyncio.TimeoutError, pymysql.err.Error) as e:
        reason = "connect timeout" if isinstance(e, asyncio.TimeoutError) else str(e) or type(e).__name__
        raise Unreachable(target, f"cannot connect to {target.host}:{target.port}: {reason}") from None


# MariaDB has no server_uuid: its server_id with host and port names the server instead.
_IDENTITY_SQL = {
    "mysql": "SELECT @@server_uuid AS uuid, @@read_only AS ro, @@innodb_read_only AS iro, DATABASE() AS db",
    "mariadb": "SELECT @@server_id AS sid, @@hostname AS host, @@port AS port, @@read_only AS ro, "
               "@@innodb_read_only AS iro, DATABASE() AS db",
}


def _first(row: dict[str, Any], *names: str) -> Any:
    return next((row[n] for n in names if n in row), None)


async def _replica_status(conn: MySQLConnection) -> dict[str, Any] | None:
    """The first replication source's status row, None on a server that replicates from nobody."""
    try:
        rows = await conn.fetch(replica_status_sql(conn.server_version))
    except pymysql.err.Error:
        # Without REPLICATION CLIENT (MySQL) / SLAVE MONITOR (MariaDB) we cannot tell; say primary.
        return None
    return rows[0] if rows else None


async def _is_standby(conn: MySQLConnection, innodb_read_only: Any) -> bool:
    """A replica has replica-status rows; an Aurora MySQL reader has innodb_read_only on instead."""
    if str(innodb_read_only) in ("1", "ON"):
        return True
    return await _replica_status(conn) is not None


async def connect_mysql(target: Target, limits: SessionLimits) -> MySQLConnection:
    raw = await open_raw(target, limits)
    try:
        conn = MySQLConnection(raw, 0, "mysql", False)
        row = (await conn.fetch("SELECT VERSION() AS v, @@innodb_read_only AS iro"))[0]
        conn.server_version, conn.flavor = parse_version(row["v"])
        for sql in session_statements(limits, conn.flavor):
            await conn.fetch(sql)
        conn.is_standby = await _is_standby(conn, row["iro"])
    except pymysql.err.Error as e:
        raw.close()
        raise Unreachable(target, f"session setup failed on {target.host}:{target.port}: {e}") from None
    except BaseException:
        raw.close()
        raise
    return conn


register_adapter("mysql", connect_mysql)
