"""The console's pages. Every read goes through the API modules' query functions; every change
through the functions the API routes call, so the console can do nothing the API would refuse."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import select, text

from app.api.deps import SettingsDep, StoreDep
from app.api.findings import SORTS, SilenceChange, _change_state, find_findings
from app.api.instances import _get
from app.api.partitions import PARTITION_ERRORS, planned_statements
from app.api.queries import _top
from app.api.replication import latest_lag
from app.api.runs import recent_runs
from app.auth import Role
from app.findings import SEVERITIES, STATES
from app.inventory.store import parse_tag_selectors
from app.models import AuditLog, Finding, Instance
from app.partitions import apply_for, outcome_json
from app.topology import Topology, members_json
from app.web import filters
from app.web.errors import ConsoleRoute
from app.web.fleet import FleetFilter, Reused, fleet_facets, fleet_page, shortest_interval_s
from app.web.history import query_history
from app.web.replication import diagram, lag_history
from app.web.session import (COOKIE, CsrfField, SessionDep, UserDep, WebUser, checked, proxy_user, set_cookie,
                             sign_in, sign_in_proxy, sign_out)

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
filters.install(templates.env)
# The distinct check names by a loose index scan of ix_findings_check: one index probe per name,
# not a pass over every finding (a plain DISTINCT reads all of a million-row table).
_CHECKS = """
with recursive c as (
  select min("check") as v from findings
  union all
  select (select min("check") from findings where "check" > c.v) from c where c.v is not null
)
select v from c where v is not null
"""
_checks = Reused()


async def check_names(session: SessionDep) -> list[str]:
    """The checks with findings, for the filter list (a new check shows up within FACETS_TTL_S)."""
    async def read() -> list[str]:
        return list((await session.execute(text(_CHECKS))).scalars())

    return await _checks.get(read)


ACTIONS = {"acknowledge": "acknowledged", "silence": "silenced", "resolve": "resolved", "reopen": "open"}


def _page(request: Request, name: str, user: WebUser | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"user": user, "Role": Role, **context})


def _back(path: str, **params: Any) -> RedirectResponse:
    # Only our own paths: a crafted return_to must not send a signed-in DBA elsewhere.
    if not path.startswith("/") or path.startswith("//"):
        path = "/"
    sep = "&" if "?" in path else "?"
    return RedirectResponse(path + (sep + urlencode(params) if params else ""), status_code=303)


@router.get("/signin")
async def signin_form(request: Request, session: SessionDep, settings: SettingsDep,
                      error: str | None = None) -> Response:
    if (name := proxy_user(request, settings)) is not None:
        token = await sign_in_proxy(session, settings, name)
        if token is None:
            return _page(request, "signin.html", None, error=f"the console key of {name} is revoked")
        response = _back("/")
        set_cookie(response, request, token)
        return response
    return _page(request, "signin.html", None, error=error)


@router.post("/signin")
async def signin(request: Request, session: SessionDep, key: Annotated[str, Form()]) -> RedirectResponse:
    token = await sign_in(session, key)
    if token is None:
        return _back("/signin", error="unknown or revoked API key")
    response = _back("/")
    set_cookie(response, request, token)
    return response


@router.post("/signout")
async def signout(request: Request, session: SessionDep, user: UserDep, csrf: CsrfField) -> RedirectResponse:
    checked(user, csrf, Role.viewer)
    await sign_out(session, request.cookies.get(COOKIE, ""))
    response = _back("/signin")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
async def fleet(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep,
                engine: str | None = None, tag: str | None = None, q: str | None = None,
                cloud: str | None = None, region: str | None = None, env: str | None = None,
                team: str | None = None, page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
    try:
        tags = parse_tag_selectors([tag]) if tag else {}
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    tags |= {k: v for k, v in (("env", env), ("team", team)) if v}
    stale_after = timedelta(seconds=3 * shortest_interval_s(settings))
    async with store.raw() as conn:
        data = await fleet_page(conn, FleetFilter(engine, tags or None, q, page, cloud, region), stale_after)
        facets = await fleet_facets(conn)
    chosen = {"q": q or "", "engine": engine or "", "cloud": cloud or "", "region": region or "", "env": env or "",
              "team": team or "", "tag": tag or ""}
    return _page(request, "fleet.html", user, facets=facets, f=chosen, page=page, stale_after=stale_after,
                 base="/?" + urlencode(chosen), **data)


@router.get("/findings")
async def findings(request: Request, session: SessionDep, user: UserDep,
                   instance: str | None = None, check: str | None = None,
                   severity: Annotated[list[str] | None, Query()] = None,
                   state: Annotated[list[str] | None, Query()] = None, tag: str | None = None,
                   sort: str = "-severity", cursor: str | None = None, msg: str | None = None) -> HTMLResponse:
    severity = [s for s in severity or [] if s in SEVERITIES] or None
    state = [s for s in state or [] if s in STATES] or None
    sort = sort if sort in SORTS else "-severity"
    try:
        result = await find_findings(session, instance=instance or None, check=check or None, severity=severity,
                                     state=state, tag=[tag] if tag else None, sort=sort, limit=50, cursor=cursor)
    except HTTPException as e:
        result, msg = {"items": [], "next_cursor": None}, str(e.detail)
    checks = await check_names(session)
    params = {"instance": instance or "", "check": check or "", "severity": severity or [], "state": state or [],
              "tag": tag or "", "sort": sort}
    items = [SimpleNamespace(**x) for x in result["items"]]  # attributes for the template's x.check
    return _page(request, "findings.html", user, items=items, next_cursor=result["next_cursor"],
                 checks=checks, sorts=list(SORTS), severities=SEVERITIES, states=STATES, f=params, msg=msg,
                 here=str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
                 next_query=urlencode({**params, "cursor": result["next_cursor"] or ""}, doseq=True))


@router.post("/findings/change")
async def change_findings(session: SessionDep, user: UserDep, csrf: CsrfField, action: Annotated[str, Form()],
                          ids: Annotated[list[int], Form()] = (), note: Annotated[str, Form()] = "",
                          duration: Annotated[str, Form()] = "",
                          return_to: Annotated[str, Form()] = "/findings") -> RedirectResponse:
    checked(user, csrf, Role.operator)
    if action not in ACTIONS or not ids:
        return _back(return_to, msg="choose an action and at least one finding")
    try:
        body = SilenceChange(note=note or None, duration=duration or None if action == "silence" else None)
    except ValidationError as e:
        return _back(return_to, msg="; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))
    until = body.ends_at(datetime.now(timezone.utc)) if action == "silence" else None
    # All the rows first, in id order: no instance_health row (migration 0010) is held while
    # waiting for a finding a collector run is writing.
    await session.execute(select(Finding.id).where(Finding.id.in_(ids)).order_by(Finding.id).with_for_update())
    done, refused = 0, []
    for finding_id in ids:
        try:
            await _change_state(session, finding_id, ACTIONS[action], user.name, body.note, until=until)
            done += 1
        except HTTPException as e:
            refused.append(str(e.detail))
    return _back(return_to, msg=f"{action}: {done} done" + (f"; refused: {'; '.join(refused)}" if refused else ""))


@router.get("/findings/{finding_id}")
async def finding_detail(request: Request, finding_id: int, session: SessionDep, user: UserDep,
                         msg: str | None = None) -> HTMLResponse:
    row = (await session.execute(select(Finding, Instance.name).join(Instance).where(Finding.id == finding_id))).first()
    if row is None:
        raise HTTPException(404, f"no finding {finding_id}")
    history = (await session.execute(
        select(AuditLog).where(AuditLog.action.like("finding.%"),
                               AuditLog.details["finding_id"].as_integer() == finding_id).order_by(AuditLog.id)
    )).scalars().all()
    return _page(request, "finding.html", user, f=row.Finding, instance=row.name, history=history, msg=msg,
                 evidence=json.dumps(row.Finding.details, indent=2, default=str))


@router.get("/instances/{name}")
async def instance(request: Request, name: str, session: SessionDep, store: StoreDep, user: UserDep) -> HTMLResponse:
    inst = await _get(session, name)
    live = (await find_findings(session, instance=name, limit=500))["items"]
    queries = await _top(store, name, None, None, "total_time", 20)
    async with store.raw() as conn:
        topology = await Topology.load(conn)
        history = await query_history(conn, inst.id, [q["query_id"] for q in queries], timedelta(hours=24))
        me = topology.members.get(inst.id)
        set_root = topology.root_of(me).name if me and me.role else None
        ids = [m.id for m in topology.members.values() if set_root and m.role and topology.root_of(m).name == set_root]
        in_set = members_json(topology, ids=set(ids))
        ids = ids or [inst.id]
        lag_charts = await lag_history(conn, ids, timedelta(hours=24))
    lag = [r for r in await latest_lag(store) if r["instance"] == name]
    by_row = {f"q{i}": history.get(q["query_id"], [[], [], []]) for i, q in enumerate(queries, 1)}
    by_row |= {f"lag{i}": c["cols"] for i, c in enumerate(lag_charts, 1)}
    members = in_set or members_json(topology, ids={inst.id})
    return _page(request, "instance.html", user, inst=inst, live=live, queries=queries, history_by_row=by_row,
                 topology=members, diagram=diagram(members, inst.name) if in_set else None, lag=lag,
                 lag_charts=lag_charts, runs=await recent_runs(session, instance=name, limit=30))


@router.get("/instances/{name}/partitions")
async def partitions(request: Request, name: str, session: SessionDep, settings: SettingsDep, user: UserDep,
                     msg: str | None = None) -> HTMLResponse:
    inst = await _get(session, name)
    try:
        statements, error = await planned_statements(settings, inst, None), None
    except PARTITION_ERRORS as e:
        statements, error = [], str(e)
    return _page(request, "partitions.html", user, inst=inst, statements=statements, error=error, msg=msg,
                 outcomes=None)


@router.post("/instances/{name}/partitions/apply")
async def partitions_apply(request: Request, name: str, session: SessionDep, settings: SettingsDep, user: UserDep,
                           csrf: CsrfField, confirm: Annotated[str, Form()] = "") -> HTMLResponse:
    checked(user, csrf, Role.admin)
    inst = await _get(session, name)
    if confirm != "yes":
        return _back(f"/instances/{name}/partitions", msg="tick the box to confirm you read the statements")
    try:
        outcomes, error = [outcome_json(o) for o in await apply_for(session, settings, inst, user.name)], None
    except PARTITION_ERRORS as e:
        outcomes, error = [], str(e)
    return _page(request, "partitions.html", user, inst=inst, statements=[], error=error, msg=None,
                 outcomes=outcomes)


@router.get("/audit")
async def audit(request: Request, session: SessionDep, user: UserDep, actor: str | None = None,
                action: str | None = None, before: int | None = None) -> HTMLResponse:
    stmt = select(AuditLog).order_by(AuditLog.id.desc()).limit(100)
    if actor:
        stmt = stmt.where(AuditLog.actor == actor)
    if action:
        stmt = stmt.where(AuditLog.action.like(action.replace("%", r"\%") + "%"))
    if before:
        stmt = stmt.where(AuditLog.id < before)
    rows = (await session.execute(stmt)).scalars().all()
    return _page(request, "audit.html", user, rows=rows, actor=actor or "", action=action or "",
                 next_before=rows[-1].id if len(rows) == 100 else None)
