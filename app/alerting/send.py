"""Send due notifications under a lease: claim a batch (SKIP LOCKED, committed at once with
lease_until), send concurrently, record outcomes as they land (every 50 ms).

Only a notification whose send was in flight when a dispatcher died (or when the store was away
for longer than the lease) is sent again, after its lease runs out, and with the same idempotency key. Notifications of one (receiver, group) go in
id order, so a resolve never overtakes its trigger.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import asyncpg

from app.alerting.config import AlertingConfig
from app.alerting.ingest import as_dict
from app.alerting.notification import Notification
from app.alerting.pipeline.record import Outcome, record_outcomes, record_receivers
from app.alerting.pipeline.retry import backoff, give_up
from app.alerting.sinks import PermanentError, RetryableError, Sink

log = logging.getLogger(__name__)
HARD_STOP_MARGIN_S = 5.0  # above the sink's own timeout
LEASE_MARGIN_S = 10.0  # above the hard stop: a live dispatcher always records before its lease ends
RECORD_EVERY_S = 0.05

_CLAIM = """
update notifications n set lease_until = $1::timestamptz + make_interval(secs => $3)
where n.id in (
  select c.id from notifications c
  where c.state = 'pending' and c.next_attempt_at <= $1 and (c.lease_until is null or c.lease_until <= $1)
    and not exists (select 1 from notifications p where p.state = 'pending' and p.receiver = c.receiver
                    and p.group_key = c.group_key and p.id < c.id)
  order by c.id limit $2 for update skip locked)
returning n.id, n.receiver, n.payload, n.attempts, n.created_at
"""


class Sender:
    def __init__(self, config: AlertingConfig, sinks: dict[str, Sink]):
        self.config = config
        self.sinks = sinks
        self.timeouts = {r.name: r.timeout_s for r in config.receivers}
        self.lease_s = max(self.timeouts.values(), default=10.0) + HARD_STOP_MARGIN_S + LEASE_MARGIN_S
        self.limit = asyncio.Semaphore(config.send_concurrency)
        # (when, outcomes not yet written, the batch's outcomes) of batches the store lost mid-record.
        self._unrecorded: list[tuple[datetime, list[Outcome], list[Outcome]]] = []

    async def attempt(self, row: dict[str, Any], now: datetime) -> Outcome:
        receiver = row["receiver"]
        sink = self.sinks.get(receiver)
        if sink is None:
            return Outcome(row["id"], receiver, "failed", f"receiver {receiver!r} is not configured")
        n = Notification.from_json(as_dict(row["payload"]), id=row["id"])
        try:
            async with self.limit:
                await asyncio.wait_for(sink.send(n), self.timeouts.get(receiver, 10.0) + HARD_STOP_MARGIN_S)
        except PermanentError as e:
            return Outcome(row["id"], receiver, "failed", str(e))
        except (RetryableError, asyncio.TimeoutError) as e:
            return self._retry(row, now, str(e) or f"{receiver}: timed out")
        except Exception as e:  # noqa: BLE001 - a sink bug: retry, and log the type only (no secrets)
            log.error("sink %s raised %s unexpectedly", receiver, type(e).__name__)
            return self._retry(row, now, f"{receiver}: unexpected {type(e).__name__}")
        return Outcome(row["id"], receiver, "sent")

    def _retry(self, row: dict[str, Any], now: datetime, error: str) -> Outcome:
        if give_up(row["created_at"], now, self.config.retry):
            return Outcome(row["id"], row["receiver"], "failed", f"gave up after retrying: {error}")
        return Outcome(row["id"], row["receiver"], "pending", error,
                       now + backoff(row["attempts"] + 1, self.config.retry))

    async def send_due(self, conn: asyncpg.Connection, now: datetime) -> list[Outcome]:
        await self._record_unrecorded(conn)
        async with conn.transaction():
            # A prepared statement's generic plan for this query was seen burning a second of CPU per
            # claim once the table had churned; the custom plan for the actual values takes ~10 ms.
            await conn.execute("set local plan_cache_mode = force_custom_plan")
            rows = [dict(r) for r in await conn.fetch(_CLAIM, now, self.config.batch_size, self.lease_s)]
        if not rows:
            return []
        finished: list[Outcome] = []
        outcomes: list[Outcome] = []

        async def one(row: dict[str, Any]) -> None:
            outcome = await self.attempt(row, now)
            finished.append(outcome)
            outcomes.append(outcome)

        sending = asyncio.ensure_future(asyncio.gather(*(one(r) for r in rows)))
        # Record what has finished every RECORD_EVERY_S while the rest are still in flight: a crash
        # then resends only what was in flight or finished in the last few milliseconds.
        batch: list[Outcome] = []
        try:
            while not sending.done():
                await asyncio.wait([sending], timeout=RECORD_EVERY_S)
                batch, finished[:] = finished[:], []
                await record_outcomes(conn, batch, now)
            batch = []
            sending.result()
            await record_outcomes(conn, finished, now)
            await record_receivers(conn, outcomes, now)
        except Exception:
            # The store went away (a restart, a failover) with these sent or in flight: keep their
            # outcomes and write them first thing next step, on a new connection and inside their
            # lease, so that no other claim sends them again.
            await asyncio.wait([sending])
            self._unrecorded.append((now, batch + finished, outcomes))
            raise
        return outcomes

    async def _record_unrecorded(self, conn: asyncpg.Connection) -> None:
        while self._unrecorded:
            now, unrecorded, outcomes = self._unrecorded[0]
            await record_outcomes(conn, unrecorded, now)
            await record_receivers(conn, outcomes, now)
            self._unrecorded.pop(0)
