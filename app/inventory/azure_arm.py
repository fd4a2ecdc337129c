"""Azure Resource Manager reads for discovery: a bearer token from azure-identity, nextLink paging,
bounded retries on throttling, and errors that say which role or setting is missing.

Discovery lists whole collections, so one failed page must fail the whole listing: a partial
list would mark every server on the missing pages as gone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlparse

import httpx

from app.inventory.cloud_settings import AzureCloud
from app.inventory.credentials import CredentialError, resolve_credential
from collectors.cloud.clients import ExtraMissing

# The token audience is Azure Resource Manager's, whatever host a proxy or test server has.
MANAGEMENT_SCOPE = "https://management.azure.com/.default"
MAX_ATTEMPTS = 5  # ARM's read quota refills in seconds; five tries span about 15 s of backoff
MAX_WAIT_S = 30.0  # a Retry-After beyond this is not worth holding a discovery run for
MAX_PAGES = 1000
RETRYABLE = (429, 500, 502, 503, 504)


class ArmError(Exception):
    """An ARM read failed; the message names the call and what to fix, never a secret or token."""


async def make_credential(cfg: AzureCloud) -> Any:
    """ClientSecretCredential when a client secret reference is configured, else DefaultAzureCredential
    (managed identity, workload identity, environment, az login)."""
    try:  # the azure extra
        from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential
    except ImportError:
        raise ArmError(str(ExtraMissing("azure", "Azure discovery"))) from None
    if not cfg.client_secret:
        return DefaultAzureCredential()
    if not (cfg.tenant_id and cfg.client_id):
        raise ArmError("cloud.azure.client_secret needs cloud.azure.tenant_id and cloud.azure.client_id")
    if cfg.client_secret.startswith("aws-sm:"):
        from app.inventory import aws_credentials  # noqa: F401  (registers the aws-sm resolver)
    try:
        secret = await resolve_credential(cfg.client_secret)
    except CredentialError as e:
        raise ArmError(f"Azure client secret: {e}") from None
    return ClientSecretCredential(cfg.tenant_id, cfg.client_id, secret)


def _loopback(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


def _subscription(url: str) -> str:
    m = re.search(r"/subscriptions/([^/?]+)", url)
    return m[1] if m else "?"


def _retry_wait(resp: httpx.Response, attempt: int) -> float:
    """Retry-After (seconds or an HTTP date) when ARM sends one, else exponential backoff."""
    value = resp.headers.get("retry-after", "")
    try:
        wait = float(value)
    except ValueError:
        try:
            wait = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            wait = 2.0 ** attempt
    return min(max(wait, 0.0), MAX_WAIT_S)


def _error_code(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["code"])
    except Exception:  # noqa: BLE001 - proxies answer HTML or nothing
        return resp.reason_phrase or "no error code"


def explain(resp: httpx.Response, what: str) -> ArmError:
    status, code, sub = resp.status_code, _error_code(resp), _subscription(str(resp.request.url))
    if status == 401:
        return ArmError(f"{what}: Azure refused the token (HTTP 401, {code}); check cloud.azure.tenant_id, "
                        "client_id and the client secret, or the managed identity")
    if status == 403:
        return ArmError(f"{what} was denied (HTTP 403, {code}): give dbfleet's identity the Reader role "
                        f"on subscription {sub}")
    if status == 404 and code in ("SubscriptionNotFound", "InvalidSubscriptionId"):
        return ArmError(f"{what}: subscription {sub} not found (HTTP 404, {code}); check the id and that "
                        "dbfleet's identity belongs to the subscription's tenant")
    if status == 404:
        return ArmError(f"{what}: not found (HTTP 404, {code}); check cloud.azure.management_endpoint")
    if status == 429:
        return ArmError(f"{what} is still throttled after {MAX_ATTEMPTS} attempts (HTTP 429, {code}); "
                        "raise cloud.azure.interval_s or try again later")
    return ArmError(f"{what} failed (HTTP {status}, {code})")


class ArmReader:
    """GETs against one management endpoint with one credential; use as an async context manager."""

    def __init__(self, credential: Any, endpoint: str = "https://management.azure.com",
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, timeout_s: float = 30.0):
        endpoint = endpoint.rstrip("/")
        if urlparse(endpoint).scheme != "https" and not _loopback(endpoint):
            raise ArmError(f"management endpoint {endpoint} must be https (a bearer token is sent to it)")
        self.endpoint, self.credential, self.sleep = endpoint, credential, sleep
        self.http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self.requests = 0

    async def __aenter__(self) -> "ArmReader":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.aclose()

    async def list(self, path: str, api_version: str, what: str, missing_ok: bool = False) -> list[dict[str, Any]]:
        """Every item of an ARM collection, following nextLink; with `missing_ok`, a parent resource
        that no longer exists (404 other than SubscriptionNotFound) is an empty collection."""
        url: str | None = f"{self.endpoint}{path}?api-version={api_version}"
        items: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            page = await self._get(url, what, missing_ok)  # type: ignore[arg-type]
            items += page.get("value") or []
            url = page.get("nextLink")
            if not url:
                return items
            if urlparse(url).netloc != urlparse(self.endpoint).netloc:
                # The token must only ever go to the configured endpoint.
                raise ArmError(f"{what}: nextLink points at {urlparse(url).netloc}, not the management endpoint")
        raise ArmError(f"{what}: more than {MAX_PAGES} pages")

    async def _token(self) -> str:
        from azure.core.exceptions import AzureError

        try:
            return (await self.credential.get_token(MANAGEMENT_SCOPE)).token
        except AzureError as e:  # authentication refused, or Entra ID / the identity endpoint unreachable
            first = (str(e).splitlines() or [""])[0][:200]
            raise ArmError(f"could not get an Azure token ({type(e).__name__}: {first}); set cloud.azure."
                           "tenant_id, client_id and client_secret, or run with a managed identity") from None

    async def _get(self, url: str, what: str, missing_ok: bool = False) -> dict[str, Any]:
        for attempt in range(MAX_ATTEMPTS):
            headers = {"authorization": f"Bearer {await self._token()}", "accept": "application/json"}
            self.requests += 1
            try:
                resp = await self.http.get(url, headers=headers)
            except httpx.HTTPError as e:
                raise ArmError(f"{what}: cannot reach {urlparse(url).netloc} ({type(e).__name__})") from None
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError:
                    raise ArmError(f"{what}: the answer is not JSON (a proxy in the way?)") from None
            if resp.status_code == 409 and _error_code(resp) == "MissingSubscriptionRegistration":
                return {"value": []}  # the resource provider was never registered, so it holds no servers
            if resp.status_code == 404 and missing_ok and _error_code(resp) != "SubscriptionNotFound":
                return {"value": []}
            if resp.status_code in RETRYABLE and attempt < MAX_ATTEMPTS - 1:
                await self.sleep(_retry_wait(resp, attempt))
                continue
            raise explain(resp, what)
        raise AssertionError("unreachable")
