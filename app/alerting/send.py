"""Send due notifications: claim them SKIP LOCKED (in id order per receiver and group, so a resolve
never overtakes its trigger), send concurrently while holding the rows, then record the outcomes.

Holding the row locks across the send is what makes a crash safe: if this process dies the
transaction aborts, the rows are still pending and another dispatcher sends them.
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
from app.alerting.pipeline.record import Outcome, record
from app.alerting.pipeline.retry import backoff, give_up
from app.alerting.sinks import PermanentError, RetryableError, Sink

log = logging.getLogger(__name__)

_CLAIM = """
select n.id, n.receiver, n.payload, n.attempts, n.created_at from notifications n
where n.state = 'pending' and n.next_attempt_at <= $1
  and not exists (select 1 from notifications p where p.state = 'pending' and p.receiver = n.receiver
                  and p.group_key = n.group_key and p.id < n.id)
order by n.id limit $2 for update skip locked
"""


class Sender:
    def __init__(self, config: AlertingConfig, sinks: dict[str, Sink]):
        self.config = config
        self.sinks = sinks
        self.timeouts = {r.name: r.timeout_s for r in config.receivers}
        self.limit = asyncio.Semaphore(config.send_concurrency)

    async def attempt(self, row: dict[str, Any], now: datetime) -> Outcome:
        receiver = row["receiver"]
        sink = self.sinks.get(receiver)
        if sink is None:
            return Outcome(row["id"], receiver, "failed", f"receiver {receiver!r} is not configured")
        n = Notification.from_json(as_dict(row["payload"]), id=row["id"])
        try:
            async with self.limit:
                # A hard stop above the sink's own timeout: a hung sink must not hold rows forever.
                await asyncio.wait_for(sink.send(n), self.timeouts.get(receiver, 10.0) + 5)
        except PermanentError as e:
            return Outcome(row["id"], receiver, "failed", str(e))
        except (RetryableError, asyncio.TimeoutError) as e:
            error = str(e) or f"{receiver}: timed out"
            if give_up(row["created_at"], now, self.config.retry):
                return Outcome(row["id"], receiver, "failed", f"gave up after retrying: {error}")
            return Outcome(row["id"], receiver, "pending", error,
                           now + backoff(row["attempts"] + 1, self.config.retry))
        except Exception as e:  # noqa: BLE001 - a sink bug: retry, and log the type only (no secrets)
            log.error("sink %s raised %s unexpectedly", receiver, type(e).__name__)
            return Outcome(row["id"], receiver, "pending", f"{receiver}: unexpected {type(e).__name__}",
                           now + backoff(row["attempts"] + 1, self.config.retry))
        return Outcome(row["id"], receiver, "sent")

    async def send_due(self, conn: asyncpg.Connection, now: datetime) -> list[Outcome]:
        async with conn.transaction():
            rows = [dict(r) for r in await conn.fetch(_CLAIM, now, self.config.batch_size)]
            if not rows:
                return []
            outcomes = await asyncio.gather(*(self.attempt(r, now) for r in rows))
            await record(conn, outcomes, now)
            return outcomes
