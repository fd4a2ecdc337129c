"""The Oracle adapter against real connection attempts through python-oracledb thin mode.

No Oracle server can run here. A closed port and a wrong host are real attempts; a listener
refusal (ORA-12514 service not registered) comes from a loopback socket that answers the TNS
CONNECT packet with a REFUSE packet, which the driver really parses. A real ORA-01017 needs the
whole authentication exchange (O5LOGON), so login failure is tested by classifying the error
objects oracledb itself builds for ORA-01017/ORA-28000, not by a live server.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import oracledb
import pytest
from oracledb.errors import _Error

from collectors.engines.base import SessionLimits, Target, Unreachable, connect
from collectors.engines.oracle import OracleConnection, classify, connect_params, version_number

PASSWORD = "Tiger#Secret42"
LIMITS = SessionLimits(connect_timeout_s=3)


def target(port: int, host: str = "127.0.0.1") -> Target:
    return Target("ora1", "oracle", host, port, dbname="ORCLPDB1", user="dbfleet", password=PASSWORD)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tns_refuse(ora_code: int) -> bytes:
    data = f"(DESCRIPTION=(TMP=)(VSNNUM=0)(ERR={ora_code})(ERROR_STACK=(ERROR=(CODE={ora_code})(EMFI=4))))"
    body = struct.pack(">BBH", 34, 0, len(data)) + data.encode()
    return struct.pack(">HHBBH", 8 + len(body), 0, 4, 0, 0) + body  # packet type 4 = REFUSE


@pytest.fixture
async def refusing_listener():
    connects: list[bytes] = []

    async def handle(reader, writer):
        connects.append(await reader.read(4096))
        writer.write(_tns_refuse(12514))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], connects
    server.close()
    await server.wait_closed()


async def test_closed_port_is_unreachable_dpy_6005():
    with pytest.raises(Unreachable) as e:
        await connect(target(_closed_port()), LIMITS)
    assert e.value.check == "instance_unreachable"
    assert "DPY-6005" in str(e.value)


async def test_wrong_host_is_unreachable():
    with pytest.raises(Unreachable) as e:
        await connect(target(1521, host="no-such-host.invalid"), LIMITS)
    assert "no-such-host.invalid" in str(e.value)


async def test_listener_refusal_names_the_service(refusing_listener):
    port, connects = refusing_listener
    with pytest.raises(Unreachable) as e:
        await connect(target(port), LIMITS)
    assert connects and connects[0][4] == 1  # a TNS CONNECT packet really arrived
    assert "DPY-6001" in str(e.value) and "ORCLPDB1" in str(e.value)
    assert PASSWORD not in str(e.value)


@pytest.mark.parametrize("message, code, check", [
    ("ORA-01017: invalid credential or not authorized; logon denied", 1017, "login_failed"),
    ("ORA-28000: The account is locked.", 28000, "login_failed"),
    ("ORA-28001: the password has expired", 28001, "login_failed"),
    ("ORA-12541: Cannot connect. No listener at host 10.0.0.1 port 1521.", 12541, "instance_unreachable"),
    ("ORA-01034: The Oracle instance is not available for use.", 1034, "instance_unreachable"),
])
def test_classify_oracle_errors(message, code, check):
    err = _Error(message, code=code)
    exc = err.exc_type(err)
    assert isinstance(exc, oracledb.Error)
    classified = classify(target(1521), exc)
    assert classified.check == check
    assert "Help:" not in str(classified)  # the driver's help URL is noise in a finding


def test_classify_redacts_password_in_message():
    err = _Error(f"ORA-01017: logon denied for password={PASSWORD}", code=1017)
    assert PASSWORD not in str(classify(target(1521), err.exc_type(err)))


@pytest.mark.parametrize("version, expected", [
    ("19.3.0.0.0", 190300),
    ("12.2.0.1.0", 120201),
    ("12.1.0.2.0", 120102),
    ("23.4.0.24.5", 230424),
    ("21.0.0.0.0", 210000),
])
def test_version_number(version, expected):
    assert version_number(version) == expected


@pytest.mark.parametrize("tls_mode, protocol, dn_match", [
    ("disable", "tcp", False), ("require", "tcps", False), ("verify-full", "tcps", True),
])
def test_connect_params(tls_mode, protocol, dn_match):
    t = Target("o", "oracle", "h", 2484, dbname="SVC", user="u", password=PASSWORD, tls_mode=tls_mode)
    params = connect_params(t, LIMITS)
    assert params["protocol"] == protocol and params["ssl_server_dn_match"] is dn_match
    assert params["service_name"] == "SVC" and params["program"] == "dbfleet"
    assert params["tcp_connect_timeout"] == 3


async def test_fetch_refuses_writes():
    conn = OracleConnection(None, server_version=190300, is_standby=False)
    for sql in ("DELETE FROM t", "BEGIN dbms_stats.gather_schema_stats('X'); END;",
                "ALTER SYSTEM SWITCH LOGFILE"):
        with pytest.raises(ValueError):
            await conn.fetch(sql)
