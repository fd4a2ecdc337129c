"""What every sink shares: the two failure kinds, HTTP status classification, secret redaction."""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from app.alerting.notification import Notification
from app.inventory.credentials import CredentialError, resolve_credential


class SinkError(Exception):
    """A failed send; the message never contains a secret."""


class RetryableError(SinkError):
    """Worth retrying with backoff: timeouts, connection errors, 429, 5xx."""


class PermanentError(SinkError):
    """Retrying cannot help: a rejected payload, bad credentials, a missing secret."""


class SinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    send_resolved: bool = True
    timeout_s: float = Field(10.0, gt=0, le=300)


class Sink(Protocol):
    async def send(self, notification: Notification) -> None: ...

    async def aclose(self) -> None: ...


class HttpClients:
    """Single-connection httpx clients handed out one request at a time.

    httpcore's pool does work per pooled connection on every request, so one client with 64
    connections manages ~300 requests/s here while 16 one-connection clients manage ~1,600
    (bench/alerts.py). Exclusive use also means keep-alive is always reused.
    """

    def __init__(self, timeout_s: float, verify: bool = True, size: int = 16):
        self.timeout_s, self.verify, self.size = timeout_s, verify, size
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self._all: list[httpx.AsyncClient] = []

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        if self._idle.empty() and len(self._all) < self.size:
            self._all.append(httpx.AsyncClient(timeout=self.timeout_s, verify=_tls(self.verify),
                                               limits=httpx.Limits(max_connections=1, keepalive_expiry=30)))
            self._idle.put_nowait(self._all[-1])
        client = await self._idle.get()
        try:
            return await client.post(url, **kwargs)
        finally:
            self._idle.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()
        self._all.clear()
        self._idle = asyncio.Queue()


@functools.cache
def _tls(verify: bool) -> ssl.SSLContext | bool:
    """One TLS context per process: building one loads the CA bundle (tens of ms, on the loop)."""
    return httpx.create_ssl_context() if verify else False


def http_client(timeout_s: float, verify: bool = True) -> HttpClients:
    return HttpClients(timeout_s, verify)


def redact(text: str, secrets: list[str | None]) -> str:
    for s in sorted((s for s in secrets if s), key=len, reverse=True):  # longest first
        if len(s) >= 4:
            text = text.replace(s, "***")
    return text


async def secret(reference: str | None, what: str) -> str:
    """Resolve a secret reference; a missing secret is a permanent failure naming the reference."""
    try:
        value = await resolve_credential(reference)
    except CredentialError as e:
        raise PermanentError(f"{what}: {e}") from None
    if not value:
        raise PermanentError(f"{what}: no secret reference configured")
    return value


async def post(client: HttpClients | httpx.AsyncClient, url: str, what: str, secrets: list[str | None],
               ok: tuple[int, ...] = (200, 201, 202, 204), **kwargs: Any) -> httpx.Response:
    """POST and classify the outcome. Errors name the sink and status, never the URL or secrets."""
    secrets = [*secrets, *_url_parts(url)]
    try:
        response = await client.post(url, **kwargs)
    except httpx.TimeoutException:
        raise RetryableError(f"{what}: timed out") from None
    except httpx.TransportError as e:
        raise RetryableError(f"{what}: {type(e).__name__}: {redact(str(e), secrets)}") from None
    if response.status_code in ok:
        return response
    body = redact(response.text[:300], secrets)
    message = f"{what}: HTTP {response.status_code}: {body}"
    if response.status_code == 429 or response.status_code >= 500 or response.status_code == 408:
        raise RetryableError(message)
    raise PermanentError(message)


def _url_parts(url: str) -> list[str]:
    """A receiver may echo part of the URL back; tokens hide in paths (Slack) and query strings."""
    try:
        parsed = httpx.URL(url)
    except Exception:  # noqa: BLE001 - an unparsable URL: redact it whole
        return [url]
    parts = [url, parsed.path if len(parsed.path) > 1 else "", parsed.query.decode()]
    return parts + [v for _, v in parsed.params.multi_items()] + [p for p in parsed.path.split("/") if len(p) >= 8]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
