"""The connection's own peer address, kept before X-Forwarded-For rewrites the client.

Proxy sign-in must ask who opened the connection; uvicorn's proxy-header handling replaces that
with the address a header claims. So `dbfleet serve` turns uvicorn's off and the app does the same
rewrite itself (uvicorn's middleware, same FORWARDED_ALLOW_IPS), inside this one.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

PEER_KEY = "dbfleet.socket_peer"


class KeepSocketPeer:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PEER_KEY] = scope.get("client")
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    # Added last is outermost: the peer is kept, then the headers are applied as uvicorn would.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1"))
    app.add_middleware(KeepSocketPeer)
