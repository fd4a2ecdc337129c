"""No secret anywhere: known, distinctive secret values go through a real sweep, the worker, the API
on loopback, failing logins and an alert dispatch, then every place they could leak is searched.

The secrets: instance passwords (one sent to a loopback peer that speaks the PostgreSQL protocol
far enough to ask for a cleartext password and refuse it, so the login fails after the secret was
used), an API key and a wrong one, a console session cookie, a webhook HMAC secret and a token in
a webhook URL, and AWS/Azure keys in the environment and settings. The places: every log record at
DEBUG (message and traceback), stdout/stderr, every API response body and header, /metrics,
sweep and dispatch errors, and every row of every table in the store. Expected hits: 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys
import urllib.parse
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn

from app.alerting.config import load_config
from app.alerting.dispatcher import dispatch_once
from app.auth import Role, create_key
from app.db import Store
from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.main import create_app
from app.scheduler import run_worker
from app.settings import Settings, get_settings
from app.sweep import Selector, Sweeper
from app.telemetry import WIRE_TRACES, setup_logging
from tests.app.alerting.alerting_helpers import Receiver
from tests.conftest import own_store, pg_url

SECRETS = {
    "pg_password": "pgPw-fz18-7c1d9e",
    "pg_wrong_password": "pgWrong-fz18-44ab2",
    "hmac_secret": "hmacSecret-fz18-5e0f3a",
    "url_token": "urlToken-fz18-a1b2c3",
    "bad_api_key": "dbf_notAKey-fz18-0b9e77",
    "aws_access_key_id": "AKIAFZ18EXAMPLE00001",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYfz18SECRET",
    "azure_client_secret": "azSecret~fz18.Q8xw",
}


class Capture(logging.Handler):
    """Every record, formatted with its traceback, from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def capture():
    """Logging as `dbfleet worker` sets it up, at DEBUG, plus a handler keeping every record."""
    root = logging.getLogger()
    saved = root.level, list(root.handlers), {n: logging.getLogger(n).level for n in WIRE_TRACES}
    setup_logging("DEBUG")
    handler = Capture()
    root.addHandler(handler)
    yield handler
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


async def password_refusing_peer(seen: list[str]) -> asyncio.base_events.Server:
    """A loopback TCP peer speaking the PostgreSQL protocol up to a refused cleartext password."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = struct.unpack("!I", await reader.readexactly(4))[0]
                body = await reader.readexactly(length - 4)
                if struct.unpack("!I", body[:4])[0] in (80877103, 80877104):  # SSL / GSS request
                    writer.write(b"N")
                    continue
                break
            writer.write(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
            await writer.drain()
            kind, length = await reader.readexactly(1), struct.unpack("!I", await reader.readexactly(4))[0]
            password = (await reader.readexactly(length - 4)).rstrip(b"\0").decode()
            if kind == b"p":
                seen.append(password)
            fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"dba\"\0\0"
            writer.write(b"E" + struct.pack("!I", len(fields) + 4) + fields)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def secret_store():
    async with own_store(f"dbf_fz18_sec_{os.getpid()}") as store:
        yield store


def _hits(texts: dict[str, str]) -> list[str]:
    """(secret, place) for every secret found, raw or URL-encoded."""
    out = []
    for label, value in SECRETS.items():
        forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
        for place, text in texts.items():
            if any(f in text for f in forms):
                line = next(x for x in text.splitlines() if any(f in x for f in forms))
                out.append(f"{label} in {place}: {line[:300]}")
    return out


async def _store_rows(store: Store) -> dict[str, str]:
    async with store.raw() as conn:
        tables = [r[0] for r in await conn.fetch(
            "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'public'")]
        return {f"table {t}": "\n".join(r[0] for r in await conn.fetch(f"select t::text from {t} t"))
                for t in tables}


async def _serve(app) -> tuple[uvicorn.Server, asyncio.Task, str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="debug", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


async def test_no_secret_in_logs_responses_metrics_errors_or_the_store(secret_store, target_db, capture, capfd,
                                                                       monkeypatch):
    store = secret_store
    seen_passwords: list[str] = []
    peer = await password_refusing_peer(seen_passwords)
    ok_hook, broken_hook = Receiver().start(), Receiver(default=500).start()
    try:
        texts = await _exercise(store, target_db, peer, ok_hook, broken_hook, monkeypatch, seen_passwords)
    finally:
        peer.close()
        ok_hook.stop()
        broken_hook.stop()
    out, err = capfd.readouterr()
    texts |= {"log records": "\n".join(capture.lines), "stdout": out, "stderr": err}
    texts |= await _store_rows(store)
    texts["webhook bodies"] = "\n".join(r.body.decode(errors="replace") for r in ok_hook.requests)
    # What was searched really holds what a leak would be next to: errors, failed sends, sign-ins.
    assert "password authentication failed" in texts["table public.collector_runs"]
    assert "HTTP 500" in texts["table public.receiver_status"] and texts["table public.notifications"]
    assert "fz18-admin" in texts["table public.api_keys"] and texts["table public.web_sessions"]
    assert len(capture.lines) > 50 and any(r.startswith("DEBUG") for r in capture.lines)
    if os.environ.get("DBFLEET_FZ18_DUMP"):
        for k, v in texts.items():
            print(f"== {k} ({len(v)} chars): {v[:300]!r}", file=sys.__stdout__)
    assert _hits(texts) == []


def _settings(broken_url: str) -> Settings:
    receivers = [
        {"type": "webhook", "name": "ops", "url_ref": "env:DBFLEET_CRED_FZ18_HOOK_URL",
         "hmac_secret_ref": "env:DBFLEET_CRED_FZ18_HMAC"},
        {"type": "webhook", "name": "broken", "url": broken_url, "hmac_secret_ref": "env:DBFLEET_CRED_FZ18_HMAC"},
        # boto3 signs with the AWS keys from the environment; the loopback peer refuses (HTTP 500).
        {"type": "cloudwatch", "name": "cw", "endpoint_url": broken_url.removesuffix("/hook"), "fleet_gauges": False,
         "create_log_group": False},
    ]
    return Settings(
        worker={"metrics_port": 0, "backoff_base_s": 0, "connect_timeout_s": 2},
        alerting={"route": {"receiver": "ops", "group_wait": "0s", "group_interval": "1s",
                            "routes": [{"matchers": [], "receiver": "ops", "continue": True},
                                       {"matchers": [], "receiver": "cw", "continue": True},
                                       {"matchers": [], "receiver": "broken"}]},
                  "receivers": receivers, "retry": {"initial": "100ms", "max_backoff": "200ms"}},
        cloud={"azure": {"tenant_id": "00000000-0000-0000-0000-000000000001",
                         "client_id": "00000000-0000-0000-0000-000000000002",
                         "client_secret": "env:DBFLEET_CRED_FZ18_AZ"}})


async def _exercise(store, target_db, peer, ok_hook, broken_hook, monkeypatch, seen_passwords) -> dict[str, str]:
    ok_url = f"{ok_hook.url}/hook?token={SECRETS['url_token']}"
    env = {"DBFLEET_CRED_FZ18_PG": SECRETS["pg_password"], "DBFLEET_CRED_FZ18_PG_WRONG": SECRETS["pg_wrong_password"],
           "DBFLEET_CRED_FZ18_HMAC": SECRETS["hmac_secret"], "DBFLEET_CRED_FZ18_HOOK_URL": ok_url,
           "DBFLEET_CRED_FZ18_AZ": SECRETS["azure_client_secret"],
           "AWS_ACCESS_KEY_ID": SECRETS["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": SECRETS["aws_secret_access_key"]}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    settings = _settings(f"{broken_hook.url}/hook")
    db = await target_db(prefix="dbf_fz18_t")
    peer_port = peer.sockets[0].getsockname()[1]
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, [
            InstanceIn(name="pg-ok", engine="postgres", host="127.0.0.1", dbname=db, user="postgres",
                       credential="env:DBFLEET_CRED_FZ18_PG"),
            InstanceIn(name="pg-wrong", engine="postgres", host="127.0.0.1", port=peer_port, dbname="shop",
                       user="dba", tls_mode="disable", credential="env:DBFLEET_CRED_FZ18_PG_WRONG"),
            InstanceIn(name="pg-down", engine="postgres", host="127.0.0.1", port=_closed_port(), dbname="shop",
                       user="dba", credential="env:DBFLEET_CRED_FZ18_PG"),
        ], actor="test")
        admin_key = await create_key(session, "fz18-admin", Role.admin)
        viewer_key = await create_key(session, "fz18-viewer", Role.viewer)
    SECRETS.update(admin_api_key=admin_key, viewer_api_key=viewer_key)
    texts: dict[str, str] = {}

    # A sweep from a terminal, then the worker (its sweeps and its dispatcher) for a few seconds.
    sweeper = Sweeper(store, settings)
    try:
        summary = await sweeper.sweep(None, Selector())
    finally:
        await sweeper.close()
    texts["sweep errors"] = "\n".join(f"{k}: {v}" for k, v in summary.errors.items())
    assert SECRETS["pg_wrong_password"] in seen_passwords, "the wrong password was really sent, and refused"
    assert summary.failed, "errors happened"
    report = await dispatch_once(store, load_config(settings.alerting), datetime.now(UTC))
    texts["dispatch report"] = repr(report)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(store, settings, stop))
    try:
        for _ in range(200):
            if ok_hook.requests and broken_hook.received >= 2 or worker.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 30)
    texts["worker exception"] = repr(worker.exception()) if worker.done() and worker.exception() else ""
    assert ok_hook.requests and broken_hook.received, "alerts were dispatched (and failed at the broken receiver)"
    signed = [r for r in broken_hook.requests if "aws4-hmac-sha256" in r.headers.get("authorization", "").lower()]
    assert signed, "CloudWatch was called, signed with the AWS keys"
    assert all("x-dbfleet-signature" in r.headers for r in ok_hook.requests), "the HMAC secret signed each one"
    texts |= await _api(store, settings, admin_key)
    return texts


async def _api(store, settings, admin_key) -> dict[str, str]:
    """Several routes through a real HTTP server on loopback, error paths and failed sign-ins included."""
    server, task, base = await _serve(create_app(settings, store.url))
    admin = {"Authorization": f"Bearer {admin_key}"}
    calls = [
        ("GET", "/api/v1/instances", admin, None), ("GET", "/api/v1/instances/pg-wrong", admin, None),
        ("GET", "/api/v1/runs?instance=pg-wrong", admin, None), ("GET", "/api/v1/findings", admin, None),
        ("GET", "/api/v1/alerts", admin, None), ("GET", "/api/v1/receivers", admin, None),
        ("GET", "/api/v1/notifications", admin, None), ("GET", "/api/v1/instances:export", admin, None),
        ("GET", "/api/v1/instances/pg-wrong/activity", admin, None),
        ("GET", "/api/v1/instances/pg-down/locks", admin, None),
        ("POST", "/api/v1/receivers/broken:test", admin, None), ("POST", "/api/v1/receivers/ops:test", admin, None),
        ("GET", "/api/v1/instances/nope", admin, None),
        ("POST", "/api/v1/instances", admin, {"name": "pasted", "engine": "postgres", "host": "h",
                                              "credential": SECRETS["pg_password"]}),
        ("PATCH", "/api/v1/instances/pg-ok", admin, {"credential": SECRETS["pg_wrong_password"]}),
        ("GET", "/api/v1/instances", {"Authorization": f"Bearer {SECRETS['bad_api_key']}"}, None),
        ("GET", "/api/v1/findings", {"X-API-Key": SECRETS["bad_api_key"]}, None),
        ("GET", "/api/v1/instances", {}, None),
        ("GET", "/metrics", {}, None), ("GET", "/readyz", {}, None),
    ]
    texts: dict[str, str] = {}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=False) as client:
            for n, (method, path, headers, body) in enumerate(calls):
                r = await client.request(method, path, headers=headers, json=body)
                texts[f"#{n} {method} {path} ({r.status_code})"] = f"{r.headers}\n{r.text}"
            # The console: a wrong key, then a right one (its session cookie is a secret too).
            bad = await client.post("/signin", data={"key": SECRETS["bad_api_key"]})
            texts[f"POST /signin bad ({bad.status_code})"] = f"{bad.headers}\n{bad.text}"
            page = await client.get(bad.headers.get("location", "/signin"))
            texts[f"GET signin error page ({page.status_code})"] = f"{page.headers}\n{page.text}"
            good = await client.post("/signin", data={"key": admin_key})
            cookie = next(iter(good.cookies.values()), "")
            if cookie:
                SECRETS["console_session"] = cookie
            home = await client.get("/", cookies=good.cookies)
            texts[f"GET / signed in ({home.status_code})"] = f"{home.headers}\n{home.text}"
            texts["GET /metrics after"] = (await client.get("/metrics")).text
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    statuses = {int(k.rsplit("(", 1)[1].rstrip(")")) for k in texts if k.endswith(")")}
    assert {200, 303, 401, 404, 422, 502} <= statuses, statuses
    assert "unknown or revoked API key" in texts["#15 GET /api/v1/instances (401)"], "the wrong key was tried"
    assert "console_session" in SECRETS, "the right key signed in"
    return texts


async def test_the_place_searcher_finds_a_planted_secret():
    """The search itself can fail: a secret in a log line, a URL-encoded one in a header."""
    assert _hits({"log": "x\nDEBUG conn password=pgPw-fz18-7c1d9e\n"}) == [
        "pg_password in log: DEBUG conn password=pgPw-fz18-7c1d9e"]
    assert _hits({"header": "location: /x?k=" + urllib.parse.quote(SECRETS["aws_secret_access_key"], safe="")})
    assert pg_url("x").endswith("/x")
