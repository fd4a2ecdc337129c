"""Active alerts, grouped as the dispatcher groups them, with silenced/inhibited/muted state."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from app.alerting.config import config_for
from app.alerting.ingest import as_dict
from app.alerting.matchers import matches_all, parse_matchers
from app.alerting.pipeline.inhibit import Inhibitor
from app.alerting.pipeline.finding_mute import finding_mute
from app.alerting.pipeline.mute import muted
from app.alerting.pipeline.silence import active_silences, silenced_by
from app.alerting.routing import RoutingTree
from app.api import errors
from app.api.deps import SettingsDep, StoreDep, ViewerDep
from app.api.params import WORD_PATTERN, Matcher, StrictJsonRoute

router = APIRouter(prefix="/api/v1", tags=["alerts"], route_class=StrictJsonRoute)

_FIRING = """
select a.fingerprint, a.status, a.severity, a.labels, a.annotations, a.starts_at, a.ends_at, a.updated_at,
       f.state as finding_state, f.state_until, f.state_severity
from alerts a left join findings f on f.fingerprint = a.fingerprint
where a.status = 'firing' order by a.starts_at
"""


class AlertOut(BaseModel):
    fingerprint: str
    status: str
    labels: dict[str, Any]
    annotations: dict[str, Any]
    starts_at: datetime
    state: Literal["active", "suppressed"]
    silenced_by: list[str] = Field(description="ids of the silences that match it")
    inhibited_by: list[str] = Field(description="fingerprints of the alerts that inhibit it")
    muted: bool = Field(description="the route's mute time interval is on now")
    finding_muted: str | None = Field(description="acknowledged or silenced: the finding behind it is")


class AlertGroupOut(BaseModel):
    group_key: str
    receiver: str
    labels: dict[str, str]
    alerts: list[AlertOut]


class AlertsOut(BaseModel):
    groups: list[AlertGroupOut]
    total: int = Field(description="distinct alerts in all groups")


def _alert(row: dict[str, Any], silenced: list[str], inhibited: list[str], is_muted: bool,
           now: datetime) -> dict[str, Any]:
    # The same rule the dispatcher applies: an acknowledged or silenced finding mutes its alert.
    by_finding = finding_mute(row, now)
    return {"fingerprint": row["fingerprint"], "status": row["status"], "labels": row["labels"],
            "annotations": as_dict(row["annotations"]), "starts_at": row["starts_at"],
            "state": "suppressed" if silenced or inhibited or is_muted or by_finding else "active",
            "silenced_by": silenced, "inhibited_by": inhibited, "muted": is_muted, "finding_muted": by_finding}


@router.get("/alerts", response_model=AlertsOut, responses=errors.VIEWER)
async def list_alerts(store: StoreDep, settings: SettingsDep, _: ViewerDep,
                      filter: Annotated[list[Matcher], Query(description="matchers, e.g. instance=db1")] = [],  # noqa: B006
                      receiver: Annotated[str | None, Query(pattern=WORD_PATTERN)] = None, silenced: bool = True,
                      inhibited: bool = True, active: bool = True) -> dict[str, Any]:
    try:
        wanted = parse_matchers(filter)
    except ValueError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"filter: {e}") from None
    config = config_for(settings)
    tree = RoutingTree(config)
    intervals = {t.name: t for t in config.time_intervals}
    now = datetime.now(timezone.utc)
    async with store.raw() as conn:
        rows = [dict(r) for r in await conn.fetch(_FIRING)]
        silences = await active_silences(conn, now)
        inhibitor = await Inhibitor(config.inhibit_rules).load(conn)
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        row["labels"] = as_dict(row["labels"])
        if not matches_all(wanted, row["labels"]):
            continue
        s, i = silenced_by(row["labels"], silences), inhibitor.inhibited_by(row["fingerprint"], row["labels"])
        for route in tree.match(row["labels"]):
            is_muted = muted(route, intervals, now)
            item = _alert(row, s, i, is_muted, now)
            if (receiver and route.receiver != receiver) or (s and not silenced) or (i and not inhibited) \
                    or (item["state"] == "active" and not active):
                continue
            key = route.group_key(row["labels"])
            group = groups.setdefault(key, {"group_key": key, "receiver": route.receiver,
                                            "labels": route.group_labels(row["labels"]), "alerts": []})
            group["alerts"].append(item)
    return {"groups": list(groups.values()), "total": len({a["fingerprint"] for g in groups.values()
                                                           for a in g["alerts"]})}
