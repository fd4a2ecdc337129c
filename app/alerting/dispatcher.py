"""The dispatcher loop: claim the outbox, evaluate threshold rules, re-open findings whose silence
has ended, flush due groups, send due notifications. Every step is a short transaction with SKIP
LOCKED claims, so any number of dispatchers can run and a crashed one's work is picked up by the others."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone

import asyncpg

from app.alerting.config import AlertingConfig, load_config
from app.alerting.finding_states import end_silences
from app.alerting.flush import Flusher
from app.alerting.gauges import export_fleet_gauges
from app.alerting.ingest import as_dict, ingest_outbox, route_into_groups
from app.alerting.reminders import send_reminders
from app.alerting.routing import RoutingTree
from app.alerting.rules import evaluate_rules
from app.alerting.send import Sender
from app.alerting.sinks import Sink, build_sink
from app.alerting.sinks.cloudwatch import CloudWatchConfig
from app.db import Store
from app.telemetry import OUTBOX_PENDING

log = logging.getLogger(__name__)
FLUSH_SLACK_S = 0.002  # wake just after a group is due, never just before it
MAX_BATCHES = 20  # per step, so one step never starves the others
PERIODS = {"rules": timedelta(seconds=15), "reminders": timedelta(seconds=30), "silences": timedelta(seconds=15),
           "housekeeping": timedelta(minutes=10), "gauges": timedelta(minutes=1)}


@dataclass
class DispatchReport:
    ingested: int = 0
    rule_changes: int = 0
    reminders: int = 0
    silences_ended: int = 0
    groups_flushed: int = 0
    enqueued: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    def add(self, other: DispatchReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def busy(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


def build_sinks(config: AlertingConfig) -> dict[str, Sink]:
    return {r.name: build_sink(r) for r in config.receivers}


class Dispatcher:
    def __init__(self, store: Store, config: AlertingConfig, sinks: dict[str, Sink] | None = None):
        self.store = store
        self.config = config
        self.tree = RoutingTree(config)
        self.flusher = Flusher(config, self.tree)
        self.sender = Sender(config, sinks if sinks is not None else build_sinks(config))
        self._last: dict[str, datetime] = {}
        self.next_flush_at: datetime | None = None  # the earliest group due, seen at the last route step

    def _due(self, task: str, now: datetime) -> bool:
        last = self._last.get(task)
        if last is not None and now - last < PERIODS[task]:
            return False
        self._last[task] = now
        return True

    async def route_step(self, conn: asyncpg.Connection, now: datetime) -> DispatchReport:
        """Outbox → groups → notification queue."""
        r = DispatchReport()
        r.ingested = await _drain(lambda: ingest_outbox(conn, self.config, self.tree, now), self.config.batch_size)
        if self._due("rules", now):
            r.rule_changes = await evaluate_rules(conn, self.config, now)
            if r.rule_changes:
                r.ingested += await _drain(lambda: ingest_outbox(conn, self.config, self.tree, now),
                                           self.config.batch_size)
        if self._due("reminders", now):
            r.reminders = await send_reminders(conn, self.config, self.tree, now)
        if self._due("silences", now):
            r.silences_ended = await end_silences(conn, now)
        for _ in range(MAX_BATCHES):
            flushed, enqueued = await self.flusher.flush_due(conn, now)
            r.groups_flushed += flushed
            r.enqueued += enqueued
            if flushed < self.config.batch_size:
                break
        if self._due("housekeeping", now):
            await housekeeping(conn, self.config, now)
        if self._due("gauges", now):
            await self._gauges(conn, now)
        pending, self.next_flush_at = await conn.fetchrow(
            "select (select count(*) from outbox where processed_at is null), (select min(next_flush_at) from alert_groups)")
        OUTBOX_PENDING.set(pending)
        return r

    def route_pause(self, poll: float, now: datetime) -> float:
        """Sleep until the next group is due, if sooner than the poll: a flush then waits ~group_wait,
        not group_wait plus up to a poll interval. A group already due is held by another dispatcher
        (or muted in a batch that has just run), so that case waits the full poll."""
        if self.next_flush_at is None or self.next_flush_at <= now:
            return poll
        return min(poll, (self.next_flush_at - now).total_seconds() + FLUSH_SLACK_S)

    async def _gauges(self, conn: asyncpg.Connection, now: datetime) -> None:
        sinks = [self.sender.sinks[r.name] for r in self.config.receivers
                 if isinstance(r, CloudWatchConfig) and r.fleet_gauges and r.name in self.sender.sinks]
        try:
            await export_fleet_gauges(conn, sinks, now)
        except Exception as e:  # noqa: BLE001 - gauges are best effort; alerts must keep flowing
            log.warning("fleet gauges not exported: %s", type(e).__name__)

    async def send_step(self, conn: asyncpg.Connection, now: datetime) -> DispatchReport:
        r = DispatchReport()
        for _ in range(MAX_BATCHES):
            outcomes = await self.sender.send_due(conn, now)
            r.sent += sum(o.state == "sent" for o in outcomes)
            r.retrying += sum(o.state == "pending" for o in outcomes)
            r.failed += sum(o.state == "failed" for o in outcomes)
            if len(outcomes) < self.config.batch_size:
                break
        return r

    async def reconcile(self, now: datetime) -> None:
        """After a start or a config change: put every firing alert into the groups of the current tree."""
        async with self.store.raw() as conn, conn.transaction():
            rows = await conn.fetch("select fingerprint, labels from alerts where status = 'firing'")
            await route_into_groups(conn, self.tree, [(r["fingerprint"], as_dict(r["labels"])) for r in rows], now)

    async def aclose(self) -> None:
        for sink in self.sender.sinks.values():
            await sink.aclose()


async def _drain(step, batch: int) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        n = await step()
        total += n
        if n < batch:
            break
    return total


async def housekeeping(conn: asyncpg.Connection, config: AlertingConfig, now: datetime) -> None:
    """Forget what is older than notification_retention: sent/failed notifications, idle log entries,
    resolved alerts no group holds, expired silences."""
    cutoff = now - config.notification_retention
    async with conn.transaction():
        await conn.execute("delete from notifications where state <> 'pending' and created_at < $1", cutoff)
        await conn.execute("""delete from notification_log l where sent_at < $1 and not exists
                              (select 1 from alert_groups g where g.group_key = l.group_key)""", cutoff)
        await conn.execute("""delete from alerts a where status = 'resolved' and updated_at < $1 and not exists
                              (select 1 from alert_group_members m where m.fingerprint = a.fingerprint)""", cutoff)
        await conn.execute("delete from silences where ends_at < $1", cutoff)
        await conn.execute("delete from outbox where processed_at < $1", cutoff)


async def dispatch_once(store: Store, config: AlertingConfig, now: datetime | None = None,
                        sinks: dict[str, Sink] | None = None) -> DispatchReport:
    """One full pass (route, then send) with every periodic task due; for tests and `dbfleet` one-shots."""
    now = now or datetime.now(timezone.utc)
    d = Dispatcher(store, config, sinks)
    try:
        async with store.raw() as conn:
            report = await d.route_step(conn, now)
            report.add(await d.send_step(conn, now))
        return report
    finally:
        if sinks is None:
            await d.aclose()


async def _loop(name: str, stop: asyncio.Event, pause, step, wake: asyncio.Event) -> None:
    """`pause()` says how long to sleep when a step found nothing to do."""
    while not stop.is_set():
        busy = False
        try:
            busy = (await step()).busy
        except Exception:  # noqa: BLE001 - keep dispatching; the store may be back next round
            log.exception("alert dispatcher %s step failed", name)
        if not busy:
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            await asyncio.wait(waiters, timeout=pause(), return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        wake.clear()


async def run_dispatcher(store: Store, settings, stop: asyncio.Event,
                         config: AlertingConfig | None = None, sinks: dict[str, Sink] | None = None) -> None:
    """Run until `stop` is set: a routing loop and a sending loop, so a slow receiver never delays
    grouping. The lead wires this into `dbfleet worker`."""
    config = config or load_config(settings.alerting)
    d = Dispatcher(store, config, sinks)
    pause = config.poll_interval.total_seconds()
    await d.reconcile(datetime.now(timezone.utc))

    wake_sender, never = asyncio.Event(), asyncio.Event()

    async def route() -> DispatchReport:
        async with store.raw() as conn:
            report = await d.route_step(conn, datetime.now(timezone.utc))
        if report.enqueued or report.reminders:
            wake_sender.set()  # send now rather than at the sender's next poll
        return report

    async def send() -> DispatchReport:
        async with store.raw() as conn:
            return await d.send_step(conn, datetime.now(timezone.utc))

    try:
        await asyncio.gather(
            _loop("route", stop, lambda: d.route_pause(pause, datetime.now(timezone.utc)), route, never),
            _loop("send", stop, lambda: pause, send, wake_sender))
    finally:
        await d.aclose()


