"""create_app(): the FastAPI application with its routers, lifespan and /metrics."""

from __future__ import annotations

import gc
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import web
from app.api import (alerts, checks, errors, findings, health, instances, keys, live, partitions, queries, receivers,
                     replication, runs, servers, silences)
from app.db import Store
from app.settings import Settings, get_settings

# `dbfleet serve --workers N` hands each process the store URL it resolved once (an embedded store
# is started by the parent, not by every worker).
SERVE_STORE_URL = "DBFLEET_SERVE_STORE_URL"

# Routers in app/api, in the order the OpenAPI page lists them.
ROUTERS = (health, servers, instances, findings, runs, keys, queries, replication, partitions, alerts, silences, receivers, live,
           checks)


def create_app(settings: Settings, store_url: str, check_migrated: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = Store(store_url, pool_size=settings.store_pool_size())
        app.state.settings = settings
        if check_migrated:
            await app.state.store.check_ready()
        # What start-up made lives as long as the process: keep it out of the collector's full
        # passes (one over ~200k objects took 20+ ms in the middle of a console request).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.store.dispose()

    app = FastAPI(title="dbfleet", version="0.1.0", lifespan=lifespan,
                  description="Fleet database operations and monitoring for DBAs.")
    errors.install(app)  # every error a problem document (RFC 9457), input values never echoed
    # The console first: a request is matched against the routes in order, and its pages are the
    # ones a person waits on (behind 100 API routes, matching took 0.6 ms of a findings page).
    # No console path lies under /api/v1, /healthz, /readyz or /metrics.
    web.mount(app)  # the console at / (app/web)
    for module in ROUTERS:
        app.include_router(module.router)
    return app


def app_for_worker() -> FastAPI:
    """The application of one of `dbfleet serve --workers N`'s processes (a uvicorn factory):
    the same settings, read again from the same environment and file, and the parent's store URL."""
    return create_app(get_settings(), os.environ[SERVE_STORE_URL])
