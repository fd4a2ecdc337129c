"""Throwaway MariaDB servers for integration tests: temp datadirs, free loopback ports, stop by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"

# Executed at every start: TCP users must be 'user'@'127.0.0.1' with skip-name-resolve.
INIT_SQL = """
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'dbf_my_repl'@'127.0.0.1' IDENTIFIED BY 'dbf_my_repl_pw';
GRANT REPLICATION SLAVE ON *.* TO 'dbf_my_repl'@'127.0.0.1';
"""


@dataclass
class MariaDB:
    name: str
    port: int
    base: Path
    proc: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def connect(self, **kw) -> pymysql.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True,
                               cursorclass=pymysql.cursors.DictCursor, **kw)

    def execute(self, *statements: str) -> list[dict]:
        rows: list[dict] = []
        with self.connect() as conn, conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                rows = list(cur.fetchall())
        return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mariadb(name: str, server_id: int, root: Path | None = None, timeout_s: float = 30.0) -> MariaDB:
    """Install a datadir the mysql user can reach and start mariadbd on a free loopback port."""
    base = Path(tempfile.mkdtemp(prefix=f"dbf_my_{name}_", dir=root))
    base.chmod(0o755)
    if os.geteuid() == 0:  # mariadbd drops to the mysql user, which must own its directory
        shutil.chown(base, "mysql", "mysql")
    port = free_port()
    (base / "init.sql").write_text(INIT_SQL)
    (base / "my.cnf").write_text(f"""[mariadbd]
datadir={base}/data
socket={base}/mysqld.sock
pid-file={base}/mysqld.pid
log-error={base}/error.log
bind-address=127.0.0.1
port={port}
user=mysql
skip-name-resolve
performance_schema=ON
log-bin={base}/binlog
server-id={server_id}
log-slave-updates
binlog-format=ROW
innodb-buffer-pool-size=32M
innodb-log-file-size=16M
init-file={base}/init.sql
""")
    subprocess.run([INSTALL_DB, "--user=mysql", f"--datadir={base}/data", "--skip-test-db",
                    "--auth-root-authentication-method=normal", "--innodb-log-file-size=16M"],
                   check=True, capture_output=True)
    proc = subprocess.Popen([MARIADBD, f"--defaults-file={base}/my.cnf"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = MariaDB(name, port, base, proc)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            server.execute("SELECT 1")
            return server
        except pymysql.err.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (base / "error.log").read_text() if (base / "error.log").exists() else ""
                stop_mariadb(server)
                raise RuntimeError(f"mariadbd {name} did not start:\n{log[-2000:]}")
            time.sleep(0.2)


def stop_mariadb(server: MariaDB) -> None:
    """Stop by PID (SIGTERM is a clean shutdown for mariadbd), then remove its directory."""
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
    shutil.rmtree(server.base, ignore_errors=True)


def make_replica(replica: MariaDB, primary: MariaDB, delay_s: int = 0) -> None:
    """Point the replica at the primary from the primary's current GTID position and start it."""
    replica.execute(
        f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
        f"MASTER_USER='dbf_my_repl', MASTER_PASSWORD='dbf_my_repl_pw', MASTER_USE_GTID=slave_pos, "
        f"MASTER_DELAY={int(delay_s)}",
        "START SLAVE",
    )
