"""The SQL Server adapter against real connection attempts through pyodbc + FreeTDS.

No SQL Server can run here, so the login failure comes from a loopback listener speaking just
enough TDS (a PRELOGIN answer, then an ERROR token 18456 to the LOGIN7 packet) for the real
driver to report a real login failure.
"""

from __future__ import annotations

import asyncio
import struct

import pyodbc
import pytest

from collectors.engines.base import LoginFailed, SessionLimits, Target, Unreachable, connect
from collectors.engines.sqlserver import (
    SqlServerConnection,
    classify,
    connection_string,
    session_statements,
    version_number,
)

PASSWORD = "Sup3r;Secret{pw}"
LIMITS = SessionLimits(connect_timeout_s=3)


def _freetds() -> bool:
    return any("freetds" in d.lower() for d in pyodbc.drivers())


needs_freetds = pytest.mark.skipif(not _freetds(), reason="apt-get install unixodbc tdsodbc")


def target(port: int, host: str = "127.0.0.1", **options) -> Target:
    return Target("mssql1", "sqlserver", host, port, dbname="master", user="dbfleet", password=PASSWORD,
                  tls_mode="disable", options={"odbc_driver": "FreeTDS", **options})


def _tds_packet(ptype: int, payload: bytes) -> bytes:
    return struct.pack(">BBHHBB", ptype, 0x01, 8 + len(payload), 0, 1, 0) + payload


def _prelogin_answer() -> bytes:
    options = [(0x00, bytes([16, 0, 0x0F, 0xA0, 0, 0])), (0x01, bytes([2]))]  # VERSION, ENCRYPT_NOT_SUP
    offset, head, data = len(options) * 5 + 1, b"", b""
    for token, value in options:
        head += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return _tds_packet(0x04, head + b"\xff" + data)


def _login_failed_answer() -> bytes:
    text = "Login failed for user 'dbfleet'.".encode("utf-16-le")
    server = "fake".encode("utf-16-le")
    body = (struct.pack("<IBBH", 18456, 1, 14, len(text) // 2) + text
            + bytes([len(server) // 2]) + server + b"\x00" + struct.pack("<I", 1))
    error = b"\xaa" + struct.pack("<H", len(body)) + body
    done = b"\xfd" + struct.pack("<HHQ", 0x02, 0, 0)  # DONE_ERROR
    return _tds_packet(0x04, error + done)


async def _read_packet(reader: asyncio.StreamReader) -> int:
    head = await reader.readexactly(8)
    await reader.readexactly(struct.unpack(">H", head[2:4])[0] - 8)
    return head[0]


@pytest.fixture
async def login_refusing_server():
    seen: list[int] = []

    async def handle(reader, writer):
        try:
            seen.append(await _read_packet(reader))
            writer.write(_prelogin_answer())
            seen.append(await _read_packet(reader))
            writer.write(_login_failed_answer())
            await writer.drain()
            await reader.read(1)  # wait for the client to hang up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_freetds
async def test_closed_port_is_unreachable_with_sqlstate():
    with pytest.raises(Unreachable) as e:
        await connect(target(_closed_port()), LIMITS)
    assert e.value.check == "instance_unreachable"
    assert "08S01" in str(e.value)
    assert PASSWORD not in str(e.value)


@needs_freetds
async def test_wrong_host_is_unreachable():
    with pytest.raises(Unreachable) as e:
        await connect(target(1433, host="no-such-host.invalid"), LIMITS)
    assert "no-such-host.invalid" in str(e.value)


@needs_freetds
async def test_login_failure_from_a_tds_listener(login_refusing_server):
    port, seen = login_refusing_server
    with pytest.raises(LoginFailed) as e:
        await connect(target(port), LIMITS)
    assert seen == [0x12, 0x10]  # PRELOGIN then LOGIN7: the driver really tried to log in
    assert e.value.check == "login_failed"
    assert "18456" in str(e.value) and PASSWORD not in str(e.value)


@pytest.mark.parametrize("version, expected", [
    ("16.0.4135.4", 16_004_135),
    ("15.0.2000.5", 15_002_000),
    ("10.50.6000.34", 10_506_000),
    ("13.0.5026.0", 13_005_026),
    ("", 0),
])
def test_version_number(version, expected):
    assert version_number(version) == expected


def test_connection_string_quotes_secrets_and_sets_session_identity():
    t = Target("m", "sqlserver", "db.example", 1433, dbname="sales", user="mon", password=PASSWORD,
               tls_mode="verify-full", options={})
    s = connection_string(t, LIMITS)
    assert s.startswith("DRIVER={ODBC Driver 18 for SQL Server};SERVER=db.example,1433;")
    assert "PWD={Sup3r;Secret{pw}}}" in s  # braces close only at the doubled brace
    assert "APP=dbfleet" in s and "ApplicationIntent=ReadOnly" in s
    assert "Encrypt=yes" in s and "TrustServerCertificate=no" in s
    assert "TDS_Version" not in s


@pytest.mark.parametrize("tls_mode, options, encrypt, trust", [
    ("disable", {}, "no", "yes"),
    ("require", {}, "yes", "yes"),
    ("verify-ca", {}, "yes", "no"),
    ("require", {"Encrypt": "strict"}, "strict", "yes"),
    ("prefer", {"TrustServerCertificate": "no"}, "no", "no"),
])
def test_tls_options(tls_mode, options, encrypt, trust):
    t = Target("m", "sqlserver", "h", 1433, tls_mode=tls_mode, options=options)
    s = connection_string(t, LIMITS)
    assert f"Encrypt={encrypt}" in s and f"TrustServerCertificate={trust}" in s


def test_session_statements_follow_limits():
    statements = session_statements(SessionLimits(lock_timeout_ms=750))
    assert statements == ["SET LOCK_TIMEOUT 750", "SET DEADLOCK_PRIORITY LOW",
                          "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"]


@pytest.mark.parametrize("args, check", [
    (("28000", "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'x'. (18456)"),
     "login_failed"),
    (("42000", "[42000] [FreeTDS][SQL Server]Login failed for user 'x'. (18456)"), "login_failed"),
    (("08001", "[08001] [Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: Error code 0x2749 (10057)"),
     "instance_unreachable"),
    (("HYT00", "[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Login timeout expired (0)"),
     "instance_unreachable"),
])
def test_classify_driver_errors(args, check):
    error = classify(target(1433), pyodbc.Error(*args))
    assert error.check == check


async def test_fetch_refuses_writes():
    conn = SqlServerConnection(None, server_version=16_000_000, is_standby=False, query_timeout_s=10)
    with pytest.raises(ValueError):
        await conn.fetch("DELETE FROM dbo.t")
    with pytest.raises(ValueError):
        await conn.fetch("/* select */ EXEC sp_configure")
