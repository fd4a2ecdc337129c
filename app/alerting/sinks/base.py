"""What every sink shares: the two failure kinds, HTTP status classification, secret redaction."""

from __future__ import annotations

import functools
import json as _json
import ssl
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
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


class ExtraMissing(PermanentError):
    """The receiver's client library is an optional extra this install lacks."""

    def __init__(self, config: Any, extra: str):
        self.extra = extra
        super().__init__(f"receiver {config.name!r} (type {config.type}) needs the {extra} extra: "
                         f"pip install 'dbfleet[{extra}]'")


class SinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    send_resolved: bool = True
    timeout_s: float = Field(10.0, gt=0, le=300)


class Sink(Protocol):
    async def send(self, notification: Notification) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class Reply:
    status_code: int
    text: str


class HttpClients:
    """One aiohttp session per sink, with a bounded keep-alive connection pool.

    aiohttp parses HTTP in C: to the loopback receiver of bench/alerts.py it manages ~7,000
    requests/s from one process where httpx manages ~1,300 (httpx's pure-Python request building
    and h11 parsing were ~60 % of the dispatcher's CPU). The session is made on first use, inside
    the running loop, as aiohttp requires.
    """

    def __init__(self, timeout_s: float, verify: bool = True, size: int = 16):
        self.timeout_s, self.verify, self.size = timeout_s, verify, size
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}

    def _proxy(self, url: str) -> str | None:
        """HTTP(S)_PROXY / NO_PROXY as httpx honoured them, looked up once per scheme://host:port:
        aiohttp's own trust_env re-reads the environment and ~/.netrc on every request (~0.3 ms)."""
        origin = "/".join(url.split("/", 3)[:3])
        if origin not in self._proxies:
            proxies = urllib.request.getproxies_environment()
            host = origin.split("//", 1)[-1]
            bypass = "no" in proxies and urllib.request.proxy_bypass_environment(host, proxies)
            self._proxies[origin] = None if bypass else proxies.get(origin.split(":", 1)[0].lower())
        return self._proxies[origin]

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.size, keepalive_timeout=30,
                                             ssl=_tls(True) if self.verify else False)
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def post(self, url: str, *, json: Any = None, content: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Reply:
        data = _json.dumps(json).encode() if json is not None else content
        headers = {"Content-Type": "application/json", **(headers or {})} if json is not None else headers
        async with self._open().post(url, data=data, headers=headers, allow_redirects=False,
                                     proxy=self._proxy(url)) as response:
            return Reply(response.status, await response.text(errors="replace"))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@functools.cache
def _tls(verify: bool) -> ssl.SSLContext | bool:
    """One TLS context per process: building one loads the CA bundle (tens of ms, on the loop)."""
    return httpx.create_ssl_context() if verify else False  # certifi's CA bundle, as before


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


async def post(client: HttpClients, url: str, what: str, secrets: list[str | None],
               ok: tuple[int, ...] = (200, 201, 202, 204), **kwargs: Any) -> Reply:
    """POST and classify the outcome. Errors name the sink and status, never the URL or secrets."""
    try:
        response = await client.post(url, **kwargs)
    except TimeoutError:  # aiohttp's timeouts subclass it
        raise RetryableError(f"{what}: timed out") from None
    except (aiohttp.ClientError, OSError) as e:
        # The URL's parts are worked out only here: on the hot path they cost as much as the send.
        secrets = [*secrets, *_url_parts(url)]
        raise RetryableError(f"{what}: {type(e).__name__}: {redact(str(e), secrets)}") from None
    if response.status_code in ok:
        return response
    body = redact(response.text[:300], [*secrets, *_url_parts(url)])
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
