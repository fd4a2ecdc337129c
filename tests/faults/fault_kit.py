"""The pieces the fault tests inject faults into: a store cluster of their own (so it can be
restarted), a loopback webhook receiver that can go down, a TCP peer that can swallow traffic,
the real `dbfleet worker` process, and the figures each test writes for docs/reliability.md."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.collectors.postgres.conftest import PgCluster, free_port

DBFLEET = str(Path(sys.executable).with_name("dbfleet"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


# --- figures -------------------------------------------------------------------------------------

def write_figures(fault: str, figures: dict[str, Any]) -> None:
    """What the test measured, for the results table (tests/faults/artifacts is git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{fault}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"\nfault {fault}: {json.dumps(figures, default=str)}")


# --- a loopback webhook receiver ----------------------------------------------------------------

@dataclass
class Delivery:
    dedup_key: str
    idempotency_key: str
    status: str
    fingerprints: tuple[str, ...]
    alerts: tuple[tuple[str, str], ...] = ()  # (alertname, instance) of each alert
    at: float = field(default_factory=time.time)


@dataclass
class Receiver:
    """An on-call webhook: `mode` is "up" (200), "503" (answers 503), "close" (reads the request and
    closes the connection without a word), or "slow" (200 after `delay_s`)."""

    mode: str = "up"
    delay_s: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0  # every request that reached us, whatever we answered
    refused: int = 0
    in_flight: int = 0  # requests held by "slow" right now

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.attempts += 1
                mode = receiver.mode
                if mode == "close":
                    receiver.refused += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "503":
                    receiver.refused += 1
                    self._answer(503, b'{"error": "maintenance"}')
                    return
                if mode == "slow":
                    receiver.in_flight += 1
                    time.sleep(receiver.delay_s)
                    receiver.in_flight -= 1
                doc = json.loads(body)
                receiver.deliveries.append(Delivery(
                    doc["dbfleet"]["dedupKey"], self.headers.get("Idempotency-Key", ""), doc["status"],
                    tuple(sorted(a["fingerprint"] for a in doc["alerts"])),
                    tuple((a["labels"]["alertname"], a["labels"]["instance"]) for a in doc["alerts"])))
                self._answer(200, b'{"status": "ok"}')

            def _answer(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def duplicates(self) -> int:
        """Deliveries beyond the first of one notification (same idempotency key)."""
        return sum(n - 1 for n in Counter(d.idempotency_key for d in self.deliveries).values())

    def by_dedup_key(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for d in self.deliveries:
            out.setdefault(d.dedup_key, []).append(d.status)
        return out

    def told_firing(self, alertname: str) -> set[str]:
        """The instances whose `alertname` alert was delivered firing."""
        return {inst for d in self.deliveries if d.status == "firing" for name, inst in d.alerts if name == alertname}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- a TCP peer that forwards, then swallows --------------------------------------------------

class BlackHole:
    """A loopback TCP port in front of a real server. Forwarding until `swallow()`; from then on it
    accepts connections and never answers, and bytes on connections already open go nowhere (a
    hung host or a dead network path that still completes the TCP handshake)."""

    def __init__(self, upstream_port: int | None = None):
        self.upstream_port = upstream_port
        self.swallowing = upstream_port is None
        self.loop = asyncio.new_event_loop()
        self.accepted = 0
        self.heard_while_swallowing = 0  # connections and chunks that went nowhere: someone is waiting
        self.held = 0  # client chunks held back by hold(): a query is in flight
        self._go: asyncio.Event | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def swallow(self) -> None:
        self.swallowing = True

    def hold(self) -> None:
        """From now on, what clients send waits at the door until release() (a query in flight)."""
        self.loop.call_soon_threadsafe(lambda: setattr(self, "_go", asyncio.Event()))

    def release(self) -> None:
        def go() -> None:
            if self._go is not None:
                self._go.set()
                self._go = None
        self.loop.call_soon_threadsafe(go)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.swallowing:
            await self._drain_forever(reader)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self._pipe(reader, up_writer, upstream=True), self._pipe(up_reader, writer),
                             return_exceptions=True)
        writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool = False) -> None:
        while data := await reader.read(65536):
            if self.swallowing:
                await self._drain_forever(reader)
                return
            if upstream and (go := self._go) is not None:
                self.held += 1
                await go.wait()
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _drain_forever(self, reader: asyncio.StreamReader) -> None:
        self.heard_while_swallowing += 1
        while await reader.read(65536):
            self.heard_while_swallowing += 1

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2) if tasks else None

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


# --- processes -------------------------------------------------------------------------------

def restart(cluster: PgCluster) -> float:
    """pg_ctl restart -m fast (every session is cut); the seconds it took."""
    t0 = time.monotonic()
    cluster.pg_ctl("restart", "-m", "fast", "-w", "-l", str(cluster.datadir.parent / "server.log"))
    return time.monotonic() - t0


def cluster_pids(cluster: PgCluster) -> list[int]:
    """The postmaster and every backend and auxiliary process of the cluster."""
    pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True).stdout.split()
    return [pid, *map(int, children)]


def freeze(cluster: PgCluster, sig: int = signal.SIGSTOP) -> list[int]:
    pids = cluster_pids(cluster)
    for pid in pids:
        os.kill(pid, sig)
    return pids


@dataclass
class Worker:
    """`dbfleet worker` as a DBA runs it, with its /metrics on a free port and its log in a file."""

    store_url: str
    config: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def metrics_port(self) -> int:
        return json.loads(self.config.read_text())["worker"]["metrics_port"]

    def start(self) -> Worker:
        env = {**os.environ, "DBFLEET_DATABASE_URL": self.store_url, "DBFLEET_CONFIG": str(self.config)}
        with open(self.log, "a") as out:  # the child has its own copy of the descriptor
            self.proc = subprocess.Popen([DBFLEET, "worker"], env=env, stdout=out, stderr=out)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def metrics(self) -> dict[str, float]:
        """The worker's /metrics, as {'name{labels}': value}."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)).text
        return parse_metrics(text)


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def metric(metrics: dict[str, float], name: str, **labels: str) -> float:
    want = {f'{k}="{v}"' for k, v in labels.items()}
    total = 0.0
    for key, value in metrics.items():
        m = re.match(r"^([^{]+)(?:\{(.*)\})?$", key)
        if m and m.group(1) == name and want <= set(filter(None, (m.group(2) or "").split(","))):
            total += value
    return total


def only_health(**health: Any) -> dict[str, Any]:
    """Every collector but health disabled: the fault tests watch connectivity and alerts."""
    from collectors.registry import all_specs

    return {s.name: {"enabled": False} for s in all_specs() if s.name != "health"} | {"health": health}


def worker_config(path: Path, receiver_url: str | None, receiver_timeout_s: float = 2, **worker: Any) -> Path:
    """Health every 5 s, nothing else; alerts of each instance grouped and sent at once."""
    cfg: dict[str, Any] = {
        "worker": {"backoff_base_s": 0, "connect_timeout_s": 2, "concurrency": 16, "metrics_port": free_port(),
                   **worker},
        "collectors": only_health(interval_s=5),
    }
    if receiver_url:
        cfg["alerting"] = {
            "route": {"receiver": "oncall", "group_by": ["instance", "alertname"], "group_wait": "0s",
                      "group_interval": "1s", "repeat_interval": "24h"},
            "receivers": [{"type": "webhook", "name": "oncall", "url": receiver_url,
                           "timeout_s": receiver_timeout_s}],
            "retry": {"initial": "1s", "max_backoff": "4s", "give_up_after": "1h"},
            "poll_interval": "200ms",
        }
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


async def wait_for(probe, timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := await probe():
            return value
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what}: not reached within {timeout_s}s")


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
