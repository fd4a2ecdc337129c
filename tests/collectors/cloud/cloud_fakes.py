"""Test doubles for the cloud tests (imported by conftest.py): moto's server, a fault-injecting proxy in front of it,
and a loopback Azure Monitor (metrics:getBatch and Log Analytics query) server."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from moto.server import ThreadedMotoServer

for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def json_error(code: str, message: str) -> tuple[int, bytes, str]:
    """An AWS JSON-protocol error answer (CloudWatch speaks JSON to this botocore)."""
    return 400, json.dumps({"__type": code, "message": message}).encode(), "application/x-amz-json-1.0"


class FaultProxy:
    """Forwards to moto, except for the faults a test asks for (status, body, content type)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        self.faults: list[tuple[int, bytes, str]] = []
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.requests += 1
                if proxy.faults:
                    status, payload, ctype = proxy.faults.pop(0)
                    return self._answer(status, payload, {"content-type": ctype})
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                conn.request("POST", self.path, body, dict(self.headers))
                resp = conn.getresponse()
                self._answer(resp.status, resp.read(), {k: v for k, v in resp.getheaders()
                                                        if k.lower() not in ("content-length", "transfer-encoding",
                                                                             "connection", "server", "date")})

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fault_proxy(moto_url: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_url)
    yield proxy
    proxy.close()


class TestCredential:
    """An azure-identity stand-in that hands out a fixed bearer token (the fake server ignores it)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> "TestCredential":
        return self

    async def __aexit__(self, *args: Any) -> None:
        pass


class FakeAzureMonitor:
    """Answers POST /subscriptions/{sub}/metrics:getBatch and POST /v1/workspaces/{id}/query."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[str, str], list[tuple[datetime, float, float]]] = {}
        self.log_rows: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                monitor.requests.append({"path": self.path, "body": body,
                                         "authorization": self.headers.get("authorization")})
                if monitor.fail_status:
                    code = {403: "AuthorizationFailed", 429: "TooManyRequests"}.get(monitor.fail_status, "Error")
                    return self._json(monitor.fail_status, {"error": {"code": code, "message": "refused by test"}},
                                      {"retry-after": "0"})
                if "/metrics:getBatch" in self.path:
                    return self._json(200, monitor.batch(self.path, body))
                if re.match(r"^/v1/workspaces/[^/]+/query", self.path):
                    return self._json(200, monitor.logs())
                self._json(404, {"error": {"code": "NotFound", "message": self.path}})

            def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def batch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        names = re.search(r"metricnames=([^&]+)", path)[1].replace("%2C", ",").split(",")
        values = []
        for rid in body["resourceids"]:
            metrics = []
            for name in names:
                data = [{"timeStamp": ts.isoformat(), "average": avg, "maximum": mx}
                        for ts, avg, mx in self.metrics.get((rid.lower(), name), [])]
                metrics.append({"id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                                "type": "Microsoft.Insights/metrics", "unit": "Percent",
                                "name": {"value": name, "localizedValue": name},
                                "timeseries": [{"metadatavalues": [], "data": data}], "errorCode": "Success"})
            values.append({"starttime": "2026-11-26T00:00:00Z", "endtime": "2026-11-26T06:00:00Z",
                           "interval": "PT5M", "namespace": "x", "resourceregion": "westeurope",
                           "resourceid": rid, "value": metrics})
        return {"values": values}

    def logs(self) -> dict[str, Any]:
        cols = ["kind", "detail", "events", "last_seen", "max_duration_ms", "example"]
        types = ["string", "string", "long", "datetime", "real", "string"]
        return {"tables": [{"name": "PrimaryResult",
                            "columns": [{"name": c, "type": t} for c, t in zip(cols, types)],
                            "rows": [[r.get(c) for c in cols] for r in self.log_rows]}]}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def azure_monitor() -> Iterator[FakeAzureMonitor]:
    monitor = FakeAzureMonitor()
    yield monitor
    monitor.close()


@pytest.fixture
def azure_credential() -> TestCredential:
    return TestCredential()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)
