"""The console's Freshness page: per source system and table, the lag, the SLA and the state,
from the same route function as GET /api/v1/freshness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.checks import freshness as freshness_route
from app.api.deps import Principal, StoreDep
from app.web.errors import ConsoleRoute
from app.web.pages import _page
from app.web.session import UserDep

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


@router.get("/freshness")
async def freshness(request: Request, store: StoreDep, user: UserDep, source: str | None = None) -> HTMLResponse:
    sources = await freshness_route(store, Principal(name=user.name, role=user.role), source or None)
    return _page(request, "freshness.html", user, sources=sources, source=source or "")
