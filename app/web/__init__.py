"""The DBA console: server-rendered pages at `/` over the same queries the API uses.

Owns its sign-in sessions (web_sessions), templates, one CSS file and vendored static files
(htmx, uPlot; see static/vendor/VENDORED.md). May import app.api, app.auth, app.models,
app.partitions and app.topology; nothing in app imports it except app.main.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    """Add the console's pages and its static files to the API application."""
    from app.web import alerts, freshness, pages, peer

    peer.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(pages.router)
    app.include_router(alerts.router)
    app.include_router(freshness.router)
