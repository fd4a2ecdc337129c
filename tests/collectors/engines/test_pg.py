"""The asyncpg adapter: read-only, time-limited sessions named dbfleet, and how failures are named."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from collectors.engines import ConnectFailed, LoginFailed, SessionLimits, Target, Unreachable, connect
from collectors.engines.base import CredentialUnavailable, DriverUnavailable, redact

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def target(dbname: str = "postgres", **kw) -> Target:
    return Target(**{"name": "pg", "engine": "postgres", "host": "127.0.0.1", "port": 5432, "dbname": dbname,
                     "user": "postgres", **kw})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def session(target_db) -> AsyncIterator:
    name = await target_db("create table t (id int primary key); insert into t values (1);")
    conn = await connect(target(name), SessionLimits(statement_timeout_ms=300, lock_timeout_ms=200))
    yield name, conn
    await conn.close()


async def test_session_reports_version_and_role(session):
    _, conn = session
    assert conn.engine == "postgres"
    assert conn.server_version >= 150000
    assert conn.is_standby is False
    assert await conn.fetch("select 1 as one") == [{"one": 1}]


async def test_session_is_read_only(session):
    _, conn = session
    assert (await conn.fetch("show default_transaction_read_only"))[0]["default_transaction_read_only"] == "on"
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.fetch("insert into t values (2) returning id")
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.fetch("create table t2 (id int)")
    assert await conn.fetch("select count(*) as n from t") == [{"n": 1}]


async def test_session_settings_as_another_connection_sees_them(session):
    name, conn = session
    pid = (await conn.fetch("select pg_backend_pid() as pid"))[0]["pid"]
    shown = {r["name"]: r["setting"] for r in await conn.fetch(
        "select name, setting from pg_settings where name in "
        "('statement_timeout', 'lock_timeout', 'application_name', 'idle_in_transaction_session_timeout')")}
    assert shown == {"statement_timeout": "300", "lock_timeout": "200", "application_name": "dbfleet",
                     "idle_in_transaction_session_timeout": "60000"}
    admin = await asyncpg.connect(ADMIN)
    try:
        row = await admin.fetchrow("select application_name, datname from pg_stat_activity where pid = $1", pid)
    finally:
        await admin.close()
    assert (row["application_name"], row["datname"]) == ("dbfleet", name)


async def test_statement_timeout_cancels_a_long_query(session):
    _, conn = session
    with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
        await conn.fetch("select pg_sleep(5)")
    assert await conn.fetch("select 1 as ok") == [{"ok": 1}]


async def test_lock_timeout_gives_up_instead_of_queueing_behind_ddl(session):
    name, conn = session
    blocker = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("lock table t in access exclusive mode")
        with pytest.raises(asyncpg.LockNotAvailableError):
            await conn.fetch("select * from t")
        await tx.rollback()
    finally:
        await blocker.close()


async def test_pgbouncer_option_disables_the_statement_cache(target_db):
    conn = await connect(target(await target_db(), options={"pgbouncer": True}))
    try:
        assert conn.raw._stmt_cache.get_max_size() == 0
        assert await conn.fetch("select 2 as two") == [{"two": 2}]
    finally:
        await conn.close()
    assert conn.is_closed()


# --- failures --------------------------------------------------------------------------------


@pytest.fixture
async def blackhole() -> AsyncIterator[int]:
    """A loopback port whose kernel completes the TCP handshake but nobody ever answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


async def test_blackholed_port_gives_connect_timeout(blackhole: int):
    limits = SessionLimits(connect_timeout_s=0.5)
    with pytest.raises(Unreachable) as caught:
        # The outer bound only keeps a hang from stalling the suite; the adapter must give up first.
        await asyncio.wait_for(connect(target(port=blackhole), limits), 20)
    assert str(caught.value) == f"cannot connect to 127.0.0.1:{blackhole}: connect timeout"
    assert caught.value.check == "instance_unreachable"
    assert caught.value.target_name == "pg"


async def test_closed_port_is_unreachable():
    port = free_port()
    with pytest.raises(Unreachable, match=f"cannot connect to 127.0.0.1:{port}: .*(refused|Connect call failed)"):
        await connect(target(port=port), SessionLimits(connect_timeout_s=2))


async def test_unresolvable_host_is_unreachable():
    with pytest.raises(Unreachable, match="cannot connect to no-such-host.invalid:5432"):
        await connect(target(host="no-such-host.invalid"), SessionLimits(connect_timeout_s=2))


async def test_missing_database_is_unreachable_with_the_servers_message():
    name = f"dbf_t_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(Unreachable) as caught:
        await connect(target(name))
    assert f'database "{name}" does not exist' in str(caught.value)
    assert not isinstance(caught.value, LoginFailed)


@pytest.fixture
async def nologin_role() -> AsyncIterator[str]:
    role = f"dbf_t_nologin_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f"create role {role} nologin")
    yield role
    await admin.execute(f"drop role if exists {role}")
    await admin.close()


async def test_role_without_login_is_a_login_failure(nologin_role: str):
    """The shared server trusts 127.0.0.1, so a NOLOGIN role is how it refuses a login for real."""
    with pytest.raises(LoginFailed, match=f'role "{nologin_role}" is not permitted to log in') as caught:
        await connect(target(user=nologin_role))
    assert caught.value.check == "login_failed"


async def test_unknown_role_is_a_login_failure():
    with pytest.raises(LoginFailed, match='role "dbf_t_nobody" does not exist'):
        await connect(target(user="dbf_t_nobody"))


def _run_as_postgres(*args: str) -> None:
    subprocess.run(list(args), check=True, user="postgres", capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def scram_server() -> Iterator[tuple[int, str]]:
    """A throwaway PostgreSQL 15 that demands scram-sha-256 passwords on 127.0.0.1."""
    if os.geteuid() != 0 or not (PG15_BIN / "initdb").exists():
        pytest.skip("needs root and the PostgreSQL 15 binaries")
    password = "s3cret-" + uuid.uuid4().hex
    root = Path(tempfile.mkdtemp(prefix="dbf_t_scram_"))
    shutil.chown(root, "postgres")
    (root / "pw").write_text(password)
    shutil.chown(root / "pw", "postgres")
    data, port = root / "data", free_port()
    _run_as_postgres(str(PG15_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                     f"--pwfile={root / 'pw'}", "--no-sync")
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\nfsync = off\n")
    _run_as_postgres(str(PG15_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "start")
    yield port, password
    _run_as_postgres(str(PG15_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    shutil.rmtree(root, ignore_errors=True)


async def test_wrong_password_is_a_login_failure_and_names_no_secret(scram_server):
    port, password = scram_server
    wrong = "wrong-" + uuid.uuid4().hex
    with pytest.raises(LoginFailed, match="password authentication failed") as caught:
        await connect(target(port=port, password=wrong))
    assert wrong not in str(caught.value) and password not in str(caught.value)
    assert wrong not in repr(target(port=port, password=wrong))


async def test_right_password_connects(scram_server):
    port, password = scram_server
    conn = await connect(target(port=port, password=password))
    try:
        assert (await conn.fetch("select current_user as u"))[0]["u"] == "postgres"
    finally:
        await conn.close()


@pytest.mark.parametrize("message, secrets, expected", [
    ("login failed for hunter2", ("hunter2",), "login failed for ***"),
    ("dsn host=db password=hunter2 user=x", (), "dsn host=db password=*** user=x"),
    ("Server=db;PWD=abc;UID=x", (), "Server=db;PWD=***;UID=x"),
    ("token=eyJabc.def secret=xyz", (), "token=*** secret=***"),
    ("nothing to hide", ("",), "nothing to hide"),
    ("nothing to hide", (None,), "nothing to hide"),
])
def test_redact(message: str, secrets: tuple, expected: str):
    assert redact(message, *secrets) == expected


@pytest.mark.parametrize("cls, check", [
    (Unreachable, "instance_unreachable"), (LoginFailed, "login_failed"),
    (CredentialUnavailable, "credential_unavailable"),
])
def test_connect_failures_redact_the_targets_password(cls: type[ConnectFailed], check: str):
    e = cls(target(password="hunter2"), "driver said: bad password hunter2")
    assert str(e) == "driver said: bad password ***"
    assert e.check == check


async def test_unknown_engine_is_a_connect_failure_of_its_own():
    with pytest.raises(DriverUnavailable, match="no adapter for engine 'db2'") as caught:
        await connect(Target(name="x", engine="db2", host="127.0.0.1", port=50000))
    assert caught.value.check == "driver_unavailable"


async def test_a_missing_optional_driver_says_which_extra_to_install(monkeypatch):
    import sys

    from collectors.engines import base

    monkeypatch.delitem(base._ADAPTERS, "mysql", raising=False)
    monkeypatch.delitem(sys.modules, "collectors.engines.mysql", raising=False)
    monkeypatch.setitem(sys.modules, "aiomysql", None)  # as if `dbfleet[mysql]` was not installed
    with pytest.raises(DriverUnavailable, match=r"the mysql driver is not installed \(aiomysql\): "
                                                r"pip install 'dbfleet\[mysql\]'"):
        await connect(Target(name="x", engine="mariadb", host="127.0.0.1", port=3306))


async def test_a_broken_module_of_our_own_is_not_reported_as_a_missing_driver(monkeypatch):
    import sys

    from collectors.engines import base

    monkeypatch.delitem(base._ADAPTERS, "mysql", raising=False)
    monkeypatch.delitem(sys.modules, "collectors.engines.mysql", raising=False)
    monkeypatch.setitem(sys.modules, "collectors.spec", None)  # an import of our own fails
    with pytest.raises(ImportError) as caught:
        await connect(Target(name="x", engine="mariadb", host="127.0.0.1", port=3306))
    assert not isinstance(caught.value, DriverUnavailable)
