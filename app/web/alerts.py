"""The console's Alerts page: firing groups, notifications, silences (create, expire) and the
routing tree's "which receivers would this reach". It calls the API's own route functions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from app.alerting.config import config_for, parse_duration
from app.alerting.routing import RoutingTree
from app.api.alerts import list_alerts
from app.api.deps import Principal, SettingsDep, StoreDep
from app.api.receivers import list_notifications
from app.api.silences import SilenceIn, create_silence, expire_silence, list_silences
from app.auth import Role
from app.web.errors import ConsoleRoute
from app.web.pages import _back, _page
from app.web.session import CsrfField, SessionDep, UserDep, WebUser, checked

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


def _principal(user: WebUser) -> Principal:
    return Principal(name=user.name, role=user.role)


def _route_test(settings, labels: str) -> tuple[list[dict[str, str]], str | None]:
    pairs = [p.partition("=") for p in labels.split()]
    if any(not sep or not key for key, sep, _ in pairs):
        return [], "labels: write them as key=value, separated by spaces"
    alert = {key: value for key, _, value in pairs}
    routes = RoutingTree(config_for(settings)).match(alert)
    return [{"receiver": r.receiver, "group": r.group_key(alert)} for r in routes], None


@router.get("/alerts")
async def alerts(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep, user: UserDep,
                 labels: str = "", msg: str | None = None) -> HTMLResponse:
    firing = await list_alerts(store, settings, _principal(user), filter=[], receiver=None, silenced=True,
                               inhibited=True, active=True)
    routed, route_error = _route_test(settings, labels) if labels else ([], None)
    return _page(request, "alerts.html", user, groups=firing["groups"], total=firing["total"],
                 notifications=await list_notifications(store, _principal(user), state=None, receiver=None, limit=50),
                 silences=await list_silences(session, _principal(user), state=None), labels=labels,
                 routed=routed, route_error=route_error, msg=msg)


@router.post("/alerts/silences")
async def silence_create(session: SessionDep, user: UserDep, csrf: CsrfField, matchers: Annotated[str, Form()],
                         duration: Annotated[str, Form()], comment: Annotated[str, Form()]) -> RedirectResponse:
    checked(user, csrf, Role.operator)
    try:
        body = SilenceIn(matchers=[m.strip() for m in matchers.splitlines() if m.strip()], comment=comment,
                         ends_at=datetime.now(timezone.utc) + parse_duration(duration.strip()))
    except (ValidationError, ValueError) as e:
        errors = e.errors() if isinstance(e, ValidationError) else [{"loc": ["duration"], "msg": str(e)}]
        return _back("/alerts", msg="; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errors))
    made = await create_silence(body, session, _principal(user))
    return _back("/alerts", msg=f"silence {made['id']} created")


@router.post("/alerts/silences/{silence_id}/expire")
async def silence_expire(silence_id: str, session: SessionDep, user: UserDep, csrf: CsrfField) -> RedirectResponse:
    checked(user, csrf, Role.operator)
    try:
        await expire_silence(silence_id, session, _principal(user))
    except HTTPException as e:
        return _back("/alerts", msg=str(e.detail))
    return _back("/alerts", msg=f"silence {silence_id} expired")
