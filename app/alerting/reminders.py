"""Silence reminders (alertmanager#1639): a silence that has hidden a firing critical alert for
longer than `silence_reminder.after` produces a reminder, repeated every `repeat` while it lasts."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime

import asyncpg

from app.alerting.config import AlertingConfig
from app.alerting.flush import alert_json
from app.alerting.ingest import as_dict
from app.alerting.matchers import equality_subset, matches_all
from app.alerting.notification import Notification
from app.alerting.pipeline.silence import ActiveSilence
from app.alerting.routing import RoutingTree

_DUE = """
select * from silences where starts_at <= $1::timestamptz - $2::interval and ends_at > $1
  and (reminded_at is null or reminded_at <= $1::timestamptz - $3::interval)
order by id for update skip locked
"""
_HIDDEN = """
select fingerprint, status, labels, annotations, starts_at, ends_at from alerts
where status = 'firing' and severity = any($1::text[]) and starts_at <= $2 and labels @> $3::jsonb
"""
_ENQUEUE = """
insert into notifications (receiver, group_key, dedup_key, kind, status, payload, state, next_attempt_at)
values ($1, $2, $3, 'reminder', 'firing', $4::jsonb, 'pending', $5)
"""


def _note(s: ActiveSilence, comment: str, count: int, after: str) -> str:
    return (f"Silence {s.id} by {s.created_by} ({comment or 'no comment'}) has hidden {count} firing "
            f"alert(s) for more than {after}. It ends at {s.ends_at.isoformat()}: expire it or fix the cause.")


async def send_reminders(conn: asyncpg.Connection, config: AlertingConfig, tree: RoutingTree, now: datetime) -> int:
    rc = config.silence_reminder
    count = 0
    async with conn.transaction():
        for row in await conn.fetch(_DUE, now, rc.after, rc.repeat):
            silence = ActiveSilence.from_row(dict(row))
            hidden = [dict(a) for a in await conn.fetch(_HIDDEN, rc.severities, now - rc.after,
                                                        json.dumps(equality_subset(silence.matchers)))]
            hidden = [a for a in hidden if matches_all(silence.matchers, as_dict(a["labels"]))]
            if not hidden:
                continue
            by_receiver: dict[str, list[dict]] = defaultdict(list)
            for a in hidden:
                for receiver in [rc.receiver] if rc.receiver else tree.receivers(as_dict(a["labels"])):
                    if receiver != "null":
                        by_receiver[receiver].append(alert_json(a))
            for receiver, alerts in sorted(by_receiver.items()):
                n = Notification(receiver=receiver, group_key=f"silence:{silence.id}", status="firing",
                                 group_labels={"silence": silence.id}, alerts=alerts, kind="reminder",
                                 note=_note(silence, row["comment"], len(alerts), str(rc.after)))
                await conn.execute(_ENQUEUE, receiver, n.group_key, n.dedup_key, json.dumps(n.to_json()), now)
                count += 1
            await conn.execute("update silences set reminded_at = $2 where id = $1", silence.id, now)
    return count
