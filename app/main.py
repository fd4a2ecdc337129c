"""create_app(): the FastAPI application with its routers, lifespan and /metrics."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.api import (alerts, findings, health, instances, keys, live, partitions, queries, receivers, replication, runs,
                     servers, silences)
from app import web
from app.db import Store
from app.settings import Settings

# Routers in app/api, in the order the OpenAPI page lists them.
ROUTERS = (health, servers, instances, findings, runs, keys, queries, replication, partitions, alerts, silences, receivers, live)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each wrong field's path and message, without echoing its value: a DBA who pastes a
    password where a credential reference belongs must not get it back in the response (or in a
    proxy's log of it)."""
    detail = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(settings: Settings, store_url: str, check_migrated: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = Store(store_url, pool_size=settings.store_pool_size())
        app.state.settings = settings
        if check_migrated:
            await app.state.store.check_ready()
        try:
            yield
        finally:
            await app.state.store.dispose()

    app = FastAPI(title="dbfleet", version="0.1.0", lifespan=lifespan,
                  description="Fleet database operations and monitoring for DBAs.")
    app.add_exception_handler(RequestValidationError, _validation_error)
    for module in ROUTERS:
        app.include_router(module.router)
    web.mount(app)  # the console at / (app/web)
    return app
