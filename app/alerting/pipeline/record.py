"""Record stage: each attempt's outcome on its notification row, per-receiver status, counters."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.telemetry import NOTIFICATION_FAILURES, NOTIFICATIONS


@dataclass
class Outcome:
    id: int
    receiver: str
    state: str  # sent | pending (retry later) | failed
    error: str | None = None
    next_attempt_at: datetime | None = None


_UPDATE = """
update notifications n set state = t.state, attempts = n.attempts + 1, last_error = t.err, lease_until = null,
  next_attempt_at = coalesce(t.nxt, n.next_attempt_at),
  sent_at = case when t.state = 'sent' then $5::timestamptz else n.sent_at end
from unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[]) as t(id, state, err, nxt)
where n.id = t.id
"""

_RECEIVER = """
insert into receiver_status as r (receiver, last_success_at, last_error_at, last_error, sent_total, failed_total)
values ($1, $2, $3, $4, $5, $6)
on conflict (receiver) do update set
  last_success_at = coalesce(excluded.last_success_at, r.last_success_at),
  last_error_at = coalesce(excluded.last_error_at, r.last_error_at),
  last_error = coalesce(excluded.last_error, r.last_error),
  sent_total = r.sent_total + excluded.sent_total, failed_total = r.failed_total + excluded.failed_total
"""


async def record_outcomes(conn: asyncpg.Connection, outcomes: list[Outcome], now: datetime) -> None:
    """Written as attempts end (the sender calls this every few ms), so a crash resends little."""
    if outcomes:
        await conn.execute(_UPDATE, [o.id for o in outcomes], [o.state for o in outcomes],
                           [o.error for o in outcomes], [o.next_attempt_at for o in outcomes], now)


async def record_receivers(conn: asyncpg.Connection, outcomes: list[Outcome], now: datetime) -> None:
    """Per-receiver last success / last error and counters, once per batch."""
    by_receiver: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_receiver[o.receiver].append(o)
    for receiver in sorted(by_receiver):  # a fixed order: concurrent dispatchers never deadlock
        items = by_receiver[receiver]
        sent = sum(o.state == "sent" for o in items)
        errors = [o.error for o in items if o.error]
        await conn.execute(_RECEIVER, receiver, now if sent else None, now if errors else None,
                           errors[-1] if errors else None, sent, sum(o.state == "failed" for o in items))
        for o in items:
            NOTIFICATIONS.labels(receiver, "retrying" if o.state == "pending" else o.state).inc()
            if o.error:
                NOTIFICATION_FAILURES.labels(receiver).inc()
