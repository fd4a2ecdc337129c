"""Fixtures for the alert router: a migrated store database (prefix dbf_al_) and loopback receivers."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest

from app.db import Store, migrate

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)  # a Monday
ALERT_TABLES = ("outbox, alerts, alert_groups, alert_group_members, notification_log, notifications, "
                "silences, receiver_status, rule_alerts, instances")


@pytest.fixture(scope="session")
async def al_store() -> AsyncIterator[Store]:
    name = f"dbf_al_{os.getpid()}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.execute(f'create database "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    await asyncio.to_thread(migrate, url)
    store = Store(url, pool_size=10)
    yield store
    await store.dispose()
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.close()


@pytest.fixture
async def store(al_store: Store) -> Store:
    async with al_store.raw() as conn:
        await conn.execute(f"truncate {ALERT_TABLES} restart identity cascade")
    return al_store


async def put_alert(store: Store, fingerprint: str, status: str = "firing", starts_at: datetime = T0,
                    ends_at: datetime | None = None, **labels: str) -> None:
    """An outbox row as app/findings.py writes it."""
    labels = {"alertname": "replication_lag", "severity": "critical", "instance": "db1", "engine": "postgres",
              "object": "standby1", **labels}
    annotations = {"summary": f"{labels['alertname']} on {labels['instance']}",
                   "description": "lag_seconds=900", "recommendation": "check the standby's replay"}
    async with store.raw() as conn:
        await conn.execute(
            "insert into outbox (fingerprint, status, severity, labels, annotations, starts_at, ends_at) "
            "values ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7)",
            fingerprint, status, labels["severity"], json.dumps(labels), json.dumps(annotations), starts_at,
            ends_at if ends_at or status == "firing" else starts_at + timedelta(minutes=1))


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback HTTP peer. Answers each request from `script` (status, delay_s) then `default`;
    `check(request) -> error or None` validates what a real service requires (error → 400)."""

    default: int = 200
    check: Callable[[Request], str | None] | None = None
    script: deque = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    received: int = 0  # counted when a request arrives, before any scripted delay

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.received += 1
                status, delay = receiver.script.popleft() if receiver.script else (receiver.default, 0)
                if delay:
                    time.sleep(delay)
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                error = receiver.check(req) if receiver.check and status < 300 else None
                if error:
                    receiver.errors.append(error)
                    req.status = status = 400
                receiver.requests.append(req)
                payload = json.dumps({"error": error} if error else {"status": "ok"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def accepted(self) -> list[Request]:
        return [r for r in self.requests if r.status < 300]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        r = Receiver(**kw).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
