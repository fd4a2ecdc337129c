"""Findings routes: filtered, sorted, cursor-paginated lists; acknowledge, silence (for a while or
until resolved), re-open and resolve. Acknowledged and silenced findings mute their alerts
(app/alerting/pipeline/finding_mute.py)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator
from sqlalchemy import func, select, tuple_, update

from app.alerting.config import parse_duration
from app.api import errors
from app.api.deps import OperatorDep, SessionDep, ViewerDep
from app.api.params import (FindingId, InstanceFilter, Note, OptionalBody, StrictJsonRoute, TagSelectors, Timestamp,
                            WordFilter)
from app.findings import STATES, finding_json, resolved_outbox
from app.inventory.store import parse_tag_selectors
from app.models import AlertGroup, AlertGroupMember, AuditLog, Finding, Instance

router = APIRouter(prefix="/api/v1", tags=["findings"], route_class=StrictJsonRoute)

SEVERITY_RANK = Finding.severity_rank  # stored and indexed (migration 0010): 1 info, 2 warning, 3 critical
SORTS = {"-last_seen": (Finding.last_seen, True), "last_seen": (Finding.last_seen, False),
         "-first_seen": (Finding.first_seen, True), "first_seen": (Finding.first_seen, False),
         "-severity": (SEVERITY_RANK, True), "severity": (SEVERITY_RANK, False)}


DURATION_PATTERN = r"^(?:[0-9]{1,5}d)?(?:[0-9]{1,7}h)?(?:[0-9]{1,9}m)?(?:[0-9]{1,9}s)?(?:[0-9]{1,9}ms)?$"
MAX_SILENCE = timedelta(days=90)  # longer is "until it resolves": leave until and duration out
MUTING = ("acknowledged", "silenced")


class StateChange(BaseModel):
    note: Note | None = None


class SilenceChange(StateChange):
    until: Timestamp | None = Field(None, description="when the silence ends, with a time zone")
    duration: Annotated[str, StringConstraints(min_length=2, max_length=40, pattern=DURATION_PATTERN)] \
        | Annotated[int, Field(ge=1, le=7_776_000)] | None = Field(None, description="or how long it lasts: 30m, 4h, 7d (a number is seconds), at most 90d",
                       examples=["4h"])

    @field_validator("until")
    @classmethod
    def _until(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a time zone (e.g. 2026-12-01T18:00:00Z)")
        if v is not None and v <= datetime.now(timezone.utc):
            raise ValueError("is in the past")
        return v

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | int | None) -> str | int | None:
        if v is not None and not timedelta(0) < parse_duration(v) <= MAX_SILENCE:
            raise ValueError(f"must be more than 0 and at most {MAX_SILENCE.days}d; leave it out to silence "
                             "until the finding resolves")
        return v

    @model_validator(mode="after")
    def _one_end(self) -> SilenceChange:
        if self.until is not None and self.duration is not None:
            raise ValueError("give until or duration, not both")
        return self

    def ends_at(self, now: datetime) -> datetime | None:
        return now + parse_duration(self.duration) if self.duration is not None else self.until


class FindingOut(BaseModel):
    """A finding in the one JSON shape the API and every --json output use (app.findings.finding_json)."""

    id: int
    instance: str
    check: str
    object: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["open", "acknowledged", "silenced", "resolved"]
    title: str
    details: dict[str, Any] = Field(description="the evidence: numbers, the SQL that shows it")
    recommendation: str = Field(description="what to do, often the DDL to run")
    first_seen: datetime
    last_seen: datetime
    opened_at: datetime
    resolved_at: datetime | None
    state_by: str | None
    state_at: datetime | None
    state_note: str | None
    state_until: datetime | None


class FindingPage(BaseModel):
    items: list[FindingOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


STATE_CHANGE = errors.OPERATOR | errors.responses(404, 409)


def _cursor(value: Any, ident: int) -> str:
    raw = value.isoformat() if isinstance(value, datetime) else value
    return base64.urlsafe_b64encode(json.dumps([raw, ident]).encode()).decode()


def _uncursor(cursor: str, is_time: bool) -> tuple[Any, int]:
    try:
        value, ident = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return (datetime.fromisoformat(value) if is_time else int(value)), int(ident)
    except (ValueError, TypeError):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "cursor: not a cursor this API returned") from None


@router.get("/findings", response_model=FindingPage, responses=errors.VIEWER)
async def list_findings(
    session: SessionDep, _: ViewerDep,
    instance: InstanceFilter = None, check: WordFilter = None,
    severity: Annotated[list[Literal["info", "warning", "critical"]] | None, Query()] = None,
    state: Annotated[list[Literal["open", "acknowledged", "silenced", "resolved"]] | None, Query()] = None,
    tag: TagSelectors = None,
    sort: Literal["-last_seen", "last_seen", "-first_seen", "first_seen", "-severity", "severity"] = "-severity",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_=-]{1,500}$",
                                        description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Live findings by default (everything but resolved); `state=resolved` for history."""
    return await find_findings(session, instance=instance, check=check, severity=severity, state=state, tag=tag,
                               sort=sort, limit=limit, cursor=cursor)


async def find_findings(session: SessionDep, *, instance: str | None = None, check: str | None = None,
                        severity: list[str] | None = None, state: list[str] | None = None,
                        tag: list[str] | None = None, sort: str = "-severity", limit: int = 100,
                        cursor: str | None = None) -> dict[str, Any]:
    """The findings list the API and the console both read: filters, sort and cursor pagination."""
    key, desc = SORTS[sort]
    # Columns, not ORM entities: the page is read once and turned into JSON, and loading 100
    # Finding objects into the session's identity map cost more than the query.
    stmt = select(*Finding.__table__.c, Instance.name.label("instance_name")).join(
        Instance, Instance.id == Finding.instance_id)
    stmt = stmt.where(Finding.state.in_(state or [s for s in STATES if s != "resolved"]))
    if instance:
        stmt = stmt.where(Instance.name == instance)
    if check:
        stmt = stmt.where(Finding.check == check)
    if severity:
        stmt = stmt.where(Finding.severity.in_(severity))
    if tag:
        try:
            stmt = stmt.where(Instance.tags.contains(parse_tag_selectors(tag)))
        except ValueError as e:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    sort_key = key if key is not SEVERITY_RANK else SEVERITY_RANK
    if cursor:
        value, ident = _uncursor(cursor, is_time=key is not SEVERITY_RANK)
        pos = tuple_(sort_key, Finding.id)
        stmt = stmt.where(pos < tuple_(value, ident) if desc else pos > tuple_(value, ident))
    order = (sort_key.desc(), Finding.id.desc()) if desc else (sort_key.asc(), Finding.id.asc())
    rows = (await session.execute(stmt.add_columns(sort_key.label("k")).order_by(*order).limit(limit + 1))).all()
    page = rows[:limit]
    nxt = _cursor(page[-1].k, page[-1].id) if len(rows) > limit else None
    return {"items": [finding_json(r, r.instance_name) for r in page], "next_cursor": nxt}


async def _change_state(session: SessionDep, finding_id: int, new_state: str, who: str, note: str | None,
                        until: datetime | None = None, now: datetime | None = None) -> dict:
    row = (await session.execute(
        select(Finding, Instance).join(Instance).where(Finding.id == finding_id).with_for_update(of=Finding)
    )).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no finding {finding_id}")
    finding, inst = row
    name = inst.name
    if finding.state == "resolved":
        raise HTTPException(status.HTTP_409_CONFLICT, f"finding {finding_id} is already resolved")
    if new_state == "open" and finding.state not in MUTING:
        raise HTTPException(status.HTTP_409_CONFLICT, f"finding {finding_id} is already open")
    before = finding.state
    now = now or datetime.now(timezone.utc)
    finding.state, finding.state_by, finding.state_at, finding.state_note = new_state, who, now, note
    finding.state_until = until if new_state == "silenced" else None
    # An acknowledgement covers this severity; a worse one pages again (pipeline/finding_mute.py).
    finding.state_severity = finding.severity if new_state in MUTING else None
    if new_state == "resolved":
        finding.resolved_at = now
        session.add(resolved_outbox(finding, inst, now))
    else:
        await _flush_alert_groups_now(session, finding.fingerprint, now)
    details = {"finding_id": finding_id, "from": before, "note": note}
    session.add(AuditLog(actor=who, action=f"finding.{new_state}", target=f"{name}/{finding.check}/{finding.object}",
                         details=details | ({"until": until.isoformat()} if finding.state_until else {})))
    await session.flush()
    return finding_json(finding, name)


async def _flush_alert_groups_now(session: SessionDep, fingerprint: str, now: datetime) -> None:
    """The finding's alert groups flush at the dispatcher's next pass, not at their next tick: a
    muted alert is acknowledged at PagerDuty/Opsgenie at once, a re-opened one fires at once."""
    groups = select(AlertGroupMember.group_key).where(AlertGroupMember.fingerprint == fingerprint)
    await session.execute(update(AlertGroup).where(AlertGroup.group_key.in_(groups))
                          .values(next_flush_at=func.least(AlertGroup.next_flush_at, now)))


@router.get("/findings/{finding_id:int}", response_model=FindingOut, responses=errors.VIEWER | errors.responses(404))
async def get_finding(finding_id: FindingId, session: SessionDep, _: ViewerDep) -> dict:
    row = (await session.execute(select(Finding, Instance.name).join(Instance).where(Finding.id == finding_id))).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no finding {finding_id}")
    return finding_json(row.Finding, row.name)


@router.post("/findings/{finding_id:int}:ack", response_model=FindingOut, responses=STATE_CHANGE)
async def acknowledge(finding_id: FindingId, session: SessionDep, who: OperatorDep,
                      body: OptionalBody[StateChange] = None) -> dict:
    """Someone is on it: the alert is muted until the finding resolves or gets worse (a higher severity)."""
    return await _change_state(session, finding_id, "acknowledged", who.name, body.note if body else None)


@router.post("/findings/{finding_id:int}:silence", response_model=FindingOut, responses=STATE_CHANGE)
async def silence(finding_id: FindingId, session: SessionDep, who: OperatorDep,
                  body: OptionalBody[SilenceChange] = None) -> dict:
    """Hide a known, accepted finding and mute its alert, for `duration` or `until` a time, or until it
    resolves when neither is given; then it is open again (label-matching alert silences: /silences)."""
    now = datetime.now(timezone.utc)
    return await _change_state(session, finding_id, "silenced", who.name, body.note if body else None,
                               until=body.ends_at(now) if body else None, now=now)


@router.post("/findings/{finding_id:int}:reopen", response_model=FindingOut, responses=STATE_CHANGE)
async def reopen(finding_id: FindingId, session: SessionDep, who: OperatorDep,
                 body: OptionalBody[StateChange] = None) -> dict:
    """End an acknowledgement or silence now: the finding is open and its alert fires again."""
    return await _change_state(session, finding_id, "open", who.name, body.note if body else None)


@router.post("/findings/{finding_id:int}:resolve", response_model=FindingOut, responses=STATE_CHANGE)
async def resolve(finding_id: FindingId, session: SessionDep, who: OperatorDep,
                  body: OptionalBody[StateChange] = None) -> dict:
    """Resolve by hand; if the problem is still there, the next run opens it again."""
    return await _change_state(session, finding_id, "resolved", who.name, body.note if body else None)

