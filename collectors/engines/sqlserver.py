"""SQL Server through aioodbc (pyodbc), in a read-only, time-limited, low-priority session.

The ODBC driver is configurable: "ODBC Driver 18 for SQL Server" in production, FreeTDS (Debian's
tdsodbc) where Microsoft's driver is not installed. Server versions are integers
``major * 1_000_000 + minor * 10_000 + build`` from SERVERPROPERTY('ProductVersion'), so
16.0.4135.4 (SQL Server 2022 CU) is 16_004_135 and collectors key their SQL by e.g. 13_000_000
(SQL Server 2016, the first with Query Store and secondary_lag_seconds).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aioodbc
import pyodbc

from collectors.engines.base import LoginFailed, SessionLimits, Target, Unreachable, redact, register_adapter

DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
SQL_2016 = 13_000_000

# SQLSTATE 28000 is "invalid authorization specification": SQL Server's error 18456 (login
# failed), 18486 (account locked), 18487/18488 (password expired / must change).
_LOGIN_SQLSTATES = {"28000"}
_LOGIN_ERROR_NUMBERS = ("18456", "18486", "18487", "18488", "4060")
# Only statements that read: collectors must never change a monitored server.
_READ_ONLY = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(select|with)\b", re.I | re.S)

VERSION_SQL = """
SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(64)) AS product_version,
       CASE WHEN EXISTS (SELECT 1 FROM sys.dm_hadr_availability_replica_states
                         WHERE is_local = 1 AND role = 2) THEN 1 ELSE 0 END AS is_standby
"""


def version_number(product_version: str) -> int:
    """'16.0.4135.4' -> 16_004_135 (major, minor, build; the revision is ignored)."""
    parts = [int(p) for p in re.findall(r"\d+", product_version or "")[:3]]
    parts += [0] * (3 - len(parts))
    major, minor, build = parts
    return major * 1_000_000 + minor * 10_000 + min(build, 9_999)


def session_statements(limits: SessionLimits) -> list[str]:
    """Run once per session: never wait long on a lock, lose any deadlock, never take read locks."""
    return [
        f"SET LOCK_TIMEOUT {int(limits.lock_timeout_ms)}",
        "SET DEADLOCK_PRIORITY LOW",
        "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
    ]


def _tls_options(target: Target) -> dict[str, str]:
    """Encrypt/TrustServerCertificate from the inventory's tls mode, options override."""
    mode = target.tls_mode
    encrypt = "no" if mode in ("disable", "allow", "prefer") else "yes"
    trust = "no" if mode in ("verify-ca", "verify-full") else "yes"
    opts = {"Encrypt": encrypt, "TrustServerCertificate": trust}
    for key in ("Encrypt", "TrustServerCertificate"):
        value = target.options.get(key) or target.options.get(key.lower())
        if value is not None:
            opts[key] = "yes" if value in (True, "yes", "true", "1", "mandatory") else str(value)
    return opts


def connection_string(target: Target, limits: SessionLimits, read_only: bool = True) -> str:
    """The ODBC connection string; braces quote values so a ';' in a password cannot inject keys.

    ReadOnly intent lets an availability group listener route collectors to a readable secondary;
    the writable admin session (partition apply) must land on the primary, so it leaves it out."""
    driver = target.options.get("odbc_driver", DEFAULT_DRIVER)
    parts = {
        "DRIVER": driver,
        "SERVER": f"{target.host},{target.port}",
        "DATABASE": target.dbname or "master",
        "UID": target.user,
        "PWD": target.password or "",
        "APP": limits.application_name,
        "ApplicationIntent": "ReadOnly" if read_only else "",
        **_tls_options(target),
    }
    if "freetds" in driver.lower():
        # FreeTDS needs the protocol version spelled out; 7.4 is SQL Server 2012 and later.
        parts["TDS_Version"] = str(target.options.get("tds_version", "7.4"))
    return ";".join(f"{k}={_quote(str(v))}" for k, v in parts.items() if v != "")


def _quote(value: str) -> str:
    if re.search(r"[;{}=\s]", value):
        return "{" + value.replace("}", "}}") + "}"
    return value


class SqlServerConnection:
    engine = "sqlserver"

    def __init__(self, conn: Any, server_version: int, is_standby: bool, query_timeout_s: float):
        self.raw = conn
        self.server_version = server_version
        self.is_standby = is_standby
        self.query_timeout_s = query_timeout_s

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if not _READ_ONLY.match(sql):
            raise ValueError("dbfleet sessions only run SELECT statements on SQL Server")
        async with self.raw.cursor() as cur:
            await cur.execute(sql, *args)
            if cur.description is None:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in await cur.fetchall()]

    async def showplan_xml(self, sql: str) -> str:
        """The estimated plan of a batch the caller has vetted (one SELECT, after the DECLAREs of its
        parameters), compiled and never run: SET SHOWPLAN_XML must be alone in its batch; the
        transaction around it is rolled back regardless."""
        async with self.raw.cursor() as cur:
            await cur.execute("BEGIN TRANSACTION")
            try:
                await cur.execute("SET SHOWPLAN_XML ON")
                try:
                    await cur.execute(sql)
                    row = await cur.fetchone()
                finally:
                    await cur.execute("SET SHOWPLAN_XML OFF")
            finally:
                await cur.execute("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")
        return row[0]

    async def close(self) -> None:
        if not self.raw.closed:
            await self.raw.close()

    def is_closed(self) -> bool:
        return self.raw.closed


def classify(target: Target, error: pyodbc.Error) -> LoginFailed | Unreachable:
    """Map a pyodbc error to the finding a DBA should see; the message is redacted."""
    sqlstate = str(error.args[0]) if error.args else ""
    message = str(error.args[1]) if len(error.args) > 1 else str(error)
    message = redact(message, target.password)
    if sqlstate in _LOGIN_SQLSTATES or any(f"({n})" in message for n in _LOGIN_ERROR_NUMBERS):
        return LoginFailed(target, f"login failed: {message}")
    return Unreachable(target, f"cannot connect to {target.host}:{target.port}: {message}")


async def _open(target: Target, limits: SessionLimits, statements: list[str], read_only: bool = True) -> Any:
    """An autocommit aioodbc connection with the query timeout set and `statements` run once."""
    query_timeout_s = max(1, round(limits.statement_timeout_ms / 1000))

    async def prepare(raw: pyodbc.Connection) -> None:
        raw.timeout = query_timeout_s  # SQL_ATTR_QUERY_TIMEOUT for every statement

    try:
        conn = await asyncio.wait_for(aioodbc.connect(
            dsn=connection_string(target, limits, read_only),
            autocommit=True,
            timeout=max(1, round(limits.connect_timeout_s)),
            after_created=prepare,
        ), limits.connect_timeout_s + 2)
    except pyodbc.Error as e:
        raise classify(target, e) from None
    except (OSError, asyncio.TimeoutError) as e:
        reason = "connect timeout" if isinstance(e, asyncio.TimeoutError) else str(e)
        raise Unreachable(target, f"cannot connect to {target.host}:{target.port}: {reason}") from None
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
    except BaseException:
        await conn.close()
        raise
    return conn


async def connect_sqlserver(target: Target, limits: SessionLimits) -> SqlServerConnection:
    conn = await _open(target, limits, session_statements(limits))
    try:
        async with conn.cursor() as cur:
            await cur.execute(VERSION_SQL)
            product_version, is_standby = await cur.fetchone()
    except BaseException:
        await conn.close()
        raise
    return SqlServerConnection(conn, version_number(product_version), bool(is_standby),
                               max(1, round(limits.statement_timeout_ms / 1000)))


def writable_session_statements(limits: SessionLimits) -> list[str]:
    """The admin session gives up on a lock after lock_timeout_ms and loses any deadlock; it reads
    committed data (no READ UNCOMMITTED: apply re-plans from the catalog it is about to change)."""
    return [f"SET LOCK_TIMEOUT {int(limits.lock_timeout_ms)}", "SET DEADLOCK_PRIORITY LOW"]


class SqlServerWritable:
    """A writable autocommit session for audited admin DDL (partition apply); collectors never get one."""

    def __init__(self, conn: Any):
        self.raw = conn

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.raw.cursor() as cur:
            await cur.execute(sql, *args)
            if cur.description is None:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in await cur.fetchall()]

    async def execute(self, sql: str) -> None:
        async with self.raw.cursor() as cur:
            await cur.execute(sql)

    async def close(self) -> None:
        if not self.raw.closed:
            await self.raw.close()


async def open_writable(target: Target, limits: SessionLimits) -> SqlServerWritable:
    """A writable session on the primary (no ReadOnly intent); raises ConnectFailed like connect()."""
    return SqlServerWritable(await _open(target, limits, writable_session_statements(limits), read_only=False))


register_adapter("sqlserver", connect_sqlserver)
