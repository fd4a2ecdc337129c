"""The held-open connection pool: one session per instance, reopened when it breaks, backoff."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from collectors.engines import CredentialUnavailable, SessionLimits, Target, Unreachable
from collectors.engines.pool import BackingOff, ConnectionPool

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
LIMITS = SessionLimits(connect_timeout_s=2)


def target(dbname: str = "postgres", name: str = "pg", **kw) -> Target:
    return Target(**{"name": name, "engine": "postgres", "host": "127.0.0.1", "port": 5432, "dbname": dbname,
                     "user": "postgres", **kw})


async def backend_pid(conn) -> int:
    return (await conn.fetch("select pg_backend_pid() as pid"))[0]["pid"]


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(LIMITS, backoff_base_s=0)
    yield p
    await p.close()


async def test_one_connection_is_held_and_reused(pool: ConnectionPool, target_db):
    t = target(await target_db())
    async with pool.session(t) as c1:
        pid1 = await backend_pid(c1)
    async with pool.session(t) as c2:
        pid2 = await backend_pid(c2)
    assert pid1 == pid2 and c1 is c2
    assert len(pool) == 1


async def test_a_sql_error_keeps_the_connection(pool: ConnectionPool):
    t = target()
    async with pool.session(t) as c:
        pid = await backend_pid(c)
    with pytest.raises(asyncpg.UndefinedTableError):
        async with pool.session(t) as c:
            await c.fetch("select * from dbf_t_no_such_table")
    async with pool.session(t) as c:
        assert await backend_pid(c) == pid


async def test_sessions_on_one_instance_are_serialised(pool: ConnectionPool):
    t = target()
    inside, most = 0, 0

    async def use() -> None:
        nonlocal inside, most
        async with pool.session(t) as c:
            inside += 1
            most = max(most, inside)
            await c.fetch("select pg_sleep(0.05)")
            inside -= 1

    await asyncio.gather(*(use() for _ in range(5)))
    assert most == 1 and len(pool) == 1


async def test_reopened_after_the_server_terminates_an_idle_session(pool: ConnectionPool):
    t = target()
    async with pool.session(t) as c:
        pid = await backend_pid(c)
    admin = await asyncpg.connect(ADMIN)
    try:
        assert await admin.fetchval("select pg_terminate_backend($1, 5000)", pid)
    finally:
        await admin.close()
    for _ in range(100):  # let the event loop see the server close the socket
        if c.is_closed():
            break
        await asyncio.sleep(0.02)
    async with pool.session(t) as c2:
        assert await backend_pid(c2) != pid


async def test_reopened_after_a_session_dies_mid_run(pool: ConnectionPool):
    t = target()
    async with pool.session(t) as c:
        pid = await backend_pid(c)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        async with pool.session(t) as c:
            await c.fetch("select pg_terminate_backend(pg_backend_pid())")
    assert len(pool) == 0
    async with pool.session(t) as c:
        assert await backend_pid(c) != pid


async def test_a_changed_target_reconnects_but_a_new_password_does_not(pool: ConnectionPool, target_db):
    db1, db2 = await target_db(), await target_db()
    async with pool.session(target(db1, password="a")) as c:
        pid = await backend_pid(c)
    async with pool.session(target(db1, password="rotated")) as c:
        assert await backend_pid(c) == pid
    async with pool.session(target(db2)) as c:
        assert (await c.fetch("select current_database() as d"))[0]["d"] == db2
        assert await backend_pid(c) != pid


async def test_forget_and_close_end_the_sessions(pool: ConnectionPool):
    pids = []
    for name in ("a", "b"):
        async with pool.session(target(name=name)) as c:
            pids.append(await backend_pid(c))
    assert len(pool) == 2
    await pool.forget("a")
    assert len(pool) == 1
    await pool.close()
    assert len(pool) == 0
    admin = await asyncpg.connect(ADMIN)
    try:
        for _ in range(100):
            alive = await admin.fetchval("select count(*) from pg_stat_activity where pid = any($1::int[])", pids)
            if alive == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        await admin.close()
    assert alive == 0


async def test_password_is_resolved_only_when_a_connection_opens(pool: ConnectionPool):
    calls = 0

    async def password() -> str:
        nonlocal calls
        calls += 1
        return "unused-with-trust"

    for _ in range(3):
        async with pool.session(target(), password) as c:
            await backend_pid(c)
    assert calls == 1


async def test_a_failing_credential_resolver_is_credential_unavailable(pool: ConnectionPool):
    async def password() -> str:
        raise KeyError("environment variable DBFLEET_TEST_MISSING is not set")

    with pytest.raises(CredentialUnavailable, match="cannot resolve credential: .*DBFLEET_TEST_MISSING") as e:
        async with pool.session(target(), password):
            pass
    assert e.value.check == "credential_unavailable"


# --- backoff ---------------------------------------------------------------------------------


class CountingRefuser:
    """A loopback port that accepts and immediately closes, counting every connection attempt."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def refuser() -> Iterator[CountingRefuser]:
    r = CountingRefuser()
    yield r
    r.close()


async def _attempt(pool: ConnectionPool, t: Target) -> Exception:
    try:
        async with pool.session(t):
            pass
    except Exception as e:  # noqa: BLE001 - the test inspects what came out
        return e
    raise AssertionError("the session opened")


async def _accepted_settles(refuser: CountingRefuser) -> int:
    await asyncio.sleep(0.2)  # the accept thread may lag the client's failure
    return refuser.accepted


async def test_backoff_grows_and_skips_connect_attempts_until_it_passes(refuser: CountingRefuser):
    pool = ConnectionPool(LIMITS, backoff_base_s=1.0, backoff_max_s=60)
    t = target(port=refuser.port)
    delays = []
    for failures in (1, 2, 3):
        if failures > 1:
            await asyncio.sleep(pool.backoff_remaining("pg") + 0.05)
        first = await _attempt(pool, t)
        assert isinstance(first, Unreachable) and not isinstance(first, BackingOff)
        attempts = await _accepted_settles(refuser)
        assert attempts >= 1
        delays.append(pool.backoff_remaining("pg"))
        # Before the backoff passes: no connect attempt at all, and the reason is kept.
        skipped = await _attempt(pool, t)
        assert isinstance(skipped, BackingOff)
        assert str(first) in str(skipped)
        assert f"after {failures} consecutive failures" in str(skipped)
        assert skipped.check == "instance_unreachable"
        assert await _accepted_settles(refuser) == attempts
        refuser.accepted = 0
    # 1 s, 2 s, 4 s: each remaining time is just under its doubled delay.
    assert 0.5 < delays[0] <= 1.0 < delays[1] <= 2.0 < delays[2] <= 4.0
    await pool.close()


async def test_backoff_is_capped(refuser: CountingRefuser):
    pool = ConnectionPool(LIMITS, backoff_base_s=0.1, backoff_max_s=0.15)
    t = target(port=refuser.port)
    for _ in range(4):
        await asyncio.sleep(pool.backoff_remaining("pg") + 0.02)
        assert isinstance(await _attempt(pool, t), Unreachable)
        assert pool.backoff_remaining("pg") <= 0.15


async def test_success_resets_the_backoff():
    """A database that does not exist yet fails; once it exists and the backoff passed, it opens."""
    name = f"dbf_t_late_{uuid.uuid4().hex[:8]}"
    pool = ConnectionPool(LIMITS, backoff_base_s=0.2)
    admin = await asyncpg.connect(ADMIN)
    try:
        for _ in range(2):
            await asyncio.sleep(pool.backoff_remaining("pg"))
            assert isinstance(await _attempt(pool, target(name)), Unreachable)
        await admin.execute(f'create database "{name}"')
        await asyncio.sleep(pool.backoff_remaining("pg"))
        async with pool.session(target(name)) as c:
            assert (await c.fetch("select current_database() as d"))[0]["d"] == name
        assert pool.backoff_remaining("pg") == 0
        await admin.execute(f'drop database "{name}" with (force)')
        for _ in range(100):  # the held session was terminated by the drop
            if c.is_closed():
                break
            await asyncio.sleep(0.02)
        assert isinstance(await _attempt(pool, target(name)), Unreachable)
        again = await _attempt(pool, target(name))
        assert isinstance(again, BackingOff) and "after 1 consecutive failures" in str(again)
    finally:
        await pool.close()
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()
