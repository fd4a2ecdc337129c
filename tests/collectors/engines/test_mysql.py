"""The aiomysql adapter: version parsing, session limits, error mapping — against real MariaDB."""

from __future__ import annotations

import asyncio
import socket

import pymysql
import pytest

from collectors.engines.base import LoginFailed, SessionLimits, Target, Unreachable, connect
from collectors.engines.mysql import parse_version, replica_status_sql, session_statements

SHARED = dict(host="127.0.0.1", port=3306, user="root")


@pytest.mark.parametrize("text, expected", [
    ("10.6.11-MariaDB", (100611, "mariadb")),
    ("10.11.19-MariaDB-0+deb12u1-log", (101119, "mariadb")),
    ("5.5.5-10.5.23-MariaDB", (100523, "mariadb")),
    ("8.0.36", (80036, "mysql")),
    ("8.0.28-mysql_aurora", (80028, "mysql")),
    ("5.7.44-log", (50744, "mysql")),
    ("9.1.0-commercial", (90100, "mysql")),
])
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("version, sql", [
    (50744, "SHOW SLAVE STATUS"), (80021, "SHOW SLAVE STATUS"), (80022, "SHOW REPLICA STATUS"),
    (100500, "SHOW SLAVE STATUS"), (100501, "SHOW REPLICA STATUS"), (101119, "SHOW REPLICA STATUS"),
])
def test_replica_status_statement_by_version(version, sql):
    assert replica_status_sql(version) == sql


def test_statement_timeout_uses_each_flavours_variable():
    limits = SessionLimits(statement_timeout_ms=2500, lock_timeout_ms=1000)
    assert "SET SESSION max_statement_time = 2.500" in session_statements(limits, "mariadb")
    assert "SET SESSION max_execution_time = 2500" in session_statements(limits, "mysql")
    for flavor in ("mariadb", "mysql"):
        assert "SET SESSION TRANSACTION READ ONLY" in session_statements(limits, flavor)


@pytest.fixture(scope="module")
def scratch_db():
    conn = pymysql.connect(**SHARED, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS dbf_my_adapter")
        cur.execute("CREATE TABLE IF NOT EXISTS dbf_my_adapter.t (id int primary key)")
    yield "dbf_my_adapter"
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS dbf_my_adapter")
    conn.close()


async def test_session_is_read_only_and_time_limited(scratch_db):
    conn = await connect(Target("shared", "mariadb", dbname=scratch_db, **SHARED),
                         SessionLimits(statement_timeout_ms=500, lock_timeout_ms=2000))
    try:
        assert conn.flavor == "mariadb" and conn.server_version >= 100500
        assert conn.is_standby is False
        [row] = await conn.fetch("SELECT @@max_statement_time AS mst, @@lock_wait_timeout AS lwt, "
                                 "@@innodb_lock_wait_timeout AS ilwt, 'a%' AS literal")
        assert (row["mst"], row["lwt"], row["ilwt"], row["literal"]) == (0.5, 2, 2, "a%")
        with pytest.raises(pymysql.err.Error, match="READ ONLY"):
            await conn.fetch("INSERT INTO t VALUES (1)")
        with pytest.raises(pymysql.err.OperationalError, match="max_statement_time"):
            await conn.fetch("SELECT count(*) FROM information_schema.columns a, "
                             "information_schema.columns b, information_schema.columns c")
        assert await conn.fetch("SELECT id FROM t WHERE id = %s", 1) == []
    finally:
        await conn.close()
    assert conn.is_closed()


async def test_closed_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unreachable) as info:
        await connect(Target("gone", "mysql", "127.0.0.1", port, user="root"))
    assert info.value.check == "instance_unreachable"


async def test_silent_server_times_out_as_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # accepts the TCP connection, never sends a handshake
        with pytest.raises(Unreachable, match="timeout"):
            await connect(Target("mute", "mysql", "127.0.0.1", s.getsockname()[1], user="root"),
                          SessionLimits(connect_timeout_s=0.5))


async def test_access_denied_is_login_failed_and_redacted():
    secret = "dbf_my_s3cret_pw"
    # The user name echoes in "Access denied for user ..." so the secret reaches the message.
    with pytest.raises(LoginFailed) as info:
        await connect(Target("shared", "mariadb", "127.0.0.1", 3306, user=secret, password=secret))
    assert info.value.check == "login_failed"
    assert "1045" in str(info.value) and secret not in str(info.value)


async def test_a_query_cut_off_by_a_timeout_closes_the_session():
    conn = await connect(Target("shared", "mariadb", **SHARED))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(conn.fetch("SELECT SLEEP(5)"), 0.2)
    assert conn.is_closed()  # the pool reopens rather than reading a half-read result
