"""Silences: create (scheduled ahead if you like), list, read, expire. Writes need the operator role."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select

from app.alerting.matchers import parse_matcher
from app.api import errors
from app.api.deps import OperatorDep, SessionDep, ViewerDep
from app.api.params import Matcher, SilenceId, Timestamp, text, StrictJsonRoute
from app.models import AuditLog, Silence

router = APIRouter(prefix="/api/v1", tags=["silences"], route_class=StrictJsonRoute)


class SilenceIn(BaseModel):
    matchers: list[Matcher] = Field(min_length=1, max_length=100,
                                                     examples=[["instance=db1", "alertname=~replication_.*"]])
    starts_at: Timestamp | None = Field(None, description="default now; later schedules the silence ahead")
    ends_at: Timestamp
    comment: text(2000, min_length=1)
    created_by: text(200) | None = Field(None, description="default: the API key's name")

    @field_validator("matchers")
    @classmethod
    def _parse(cls, v: list[str]) -> list[str]:
        parsed = [parse_matcher(m) for m in v]
        # A silence whose every matcher also matches an empty label would silence everything.
        if all(m.matches({}) for m in parsed):
            raise ValueError("at least one matcher must not match an empty label (it would silence every alert)")
        return v

    @model_validator(mode="after")
    def _window(self) -> SilenceIn:
        now = datetime.now(timezone.utc)
        for field in ("starts_at", "ends_at"):
            value = getattr(self, field)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{field} needs a time zone (e.g. 2026-11-26T10:00:00Z)")
        if self.ends_at <= now:
            raise ValueError("ends_at is in the past")
        if self.ends_at <= (self.starts_at or now):
            raise ValueError("ends_at must be after starts_at")
        return self


def silence_state(s: Silence, now: datetime) -> Literal["pending", "active", "expired"]:
    if s.ends_at <= now:
        return "expired"
    return "pending" if s.starts_at > now else "active"


class SilenceOut(BaseModel):
    id: str
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    state: Literal["pending", "active", "expired"]
    reminded_at: datetime | None = Field(description="when the owner was last told it is about to end")


def silence_json(s: Silence, now: datetime) -> dict[str, Any]:
    return {"id": s.id, "matchers": s.matchers, "starts_at": s.starts_at, "ends_at": s.ends_at,
            "created_by": s.created_by, "comment": s.comment, "state": silence_state(s, now),
            "reminded_at": s.reminded_at}


@router.post("/silences", status_code=status.HTTP_201_CREATED, response_model=SilenceOut, responses=errors.OPERATOR)
async def create_silence(body: SilenceIn, session: SessionDep, who: OperatorDep) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    s = Silence(matchers=body.matchers, starts_at=body.starts_at or now, ends_at=body.ends_at,
                created_by=body.created_by or who.name, comment=body.comment)
    session.add(s)
    await session.flush()
    session.add(AuditLog(actor=who.name, action="silence.create", target=s.id,
                         details={"matchers": body.matchers, "ends_at": body.ends_at.isoformat()}))
    return silence_json(s, now)


@router.get("/silences", response_model=list[SilenceOut], responses=errors.VIEWER)
async def list_silences(session: SessionDep, _: ViewerDep,
                        state: Literal["pending", "active", "expired"] | None = Query(None)) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc)
    rows = (await session.execute(select(Silence).order_by(Silence.starts_at.desc()))).scalars()
    return [silence_json(s, now) for s in rows if state is None or silence_state(s, now) == state]


async def _get(session: SessionDep, silence_id: str) -> Silence:
    s = await session.get(Silence, silence_id)
    if s is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no silence {silence_id}")
    return s


@router.get("/silences/{silence_id}", response_model=SilenceOut, responses=errors.VIEWER | errors.responses(404))
async def get_silence(silence_id: SilenceId, session: SessionDep, _: ViewerDep) -> dict[str, Any]:
    return silence_json(await _get(session, silence_id), datetime.now(timezone.utc))


@router.delete("/silences/{silence_id}", response_model=SilenceOut,
               responses=errors.OPERATOR | errors.responses(404, 409))
async def expire_silence(silence_id: SilenceId, session: SessionDep, who: OperatorDep) -> dict[str, Any]:
    """Expire now (kept for the record, like Alertmanager); a pending silence never starts."""
    s = await _get(session, silence_id)
    now = datetime.now(timezone.utc)
    if silence_state(s, now) == "expired":
        raise HTTPException(status.HTTP_409_CONFLICT, f"silence {silence_id} has already expired")
    if s.starts_at > now:
        s.starts_at = now
    s.ends_at = now
    s.updated_at = now
    session.add(AuditLog(actor=who.name, action="silence.expire", target=s.id, details={}))
    return silence_json(s, now)
