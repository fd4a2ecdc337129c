"""Helpers for the alert router tests: outbox rows as app/findings.py writes them, and a loopback
HTTP receiver. (A plain module, not conftest, so every test folder can import it by one name.)"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.db import Store

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)  # a Monday


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
                payload = b"" if status == 204 else json.dumps(
                    {"error": error} if error else {"status": "success", "message": "Event processed"}).encode()
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




def alert(fp: str, status: str = "firing", severity: str = "critical", **labels: str) -> dict:
    """One alert as a notification carries it."""
    return {"fingerprint": fp, "status": status,
            "labels": {"alertname": "replication_lag", "severity": severity, "instance": "db1", "engine": "postgres",
                       "object": "standby1", "env": "prod", **labels},
            "annotations": {"summary": "Standby standby1 is 900 s behind", "description": "lag_seconds=900",
                            "recommendation": "Check replay on the standby; consider pausing bulk loads."},
            "starts_at": "2026-11-23T10:00:00+00:00",
            "ends_at": None if status == "firing" else "2026-11-23T11:00:00+00:00"}


def make_notification(status: str = "firing", alerts: list[dict] | None = None, **kw: Any):
    from app.alerting.notification import Notification

    alerts = alerts or [alert("a1", status), alert("a2", status, object="standby2")]
    return Notification(receiver=kw.pop("receiver", "pd"), group_key='0.1:{"instance":"db1"}', status=status,
                        group_labels={"instance": "db1"}, alerts=alerts, id=kw.pop("id", 7), **kw)


async def ensure_samples_partition(conn) -> None:
    """One partition of samples from T0's month to a month past now, so rule and gauge tests do not
    depend on the service's partition maintenance."""
    end = (datetime.now(timezone.utc) + timedelta(days=31)).date()
    await conn.execute("create table if not exists samples_dbf_al partition of samples "
                       f"for values from ('2026-11-01') to ('{end.isoformat()}')")
