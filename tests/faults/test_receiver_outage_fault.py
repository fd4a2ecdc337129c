"""Fault: the on-call webhook is down for 10 minutes of alert time: it answers 503 for five, then
closes every connection without a word for five more, then comes back. Alerts keep arriving
meanwhile (real sweeps of instances that cannot be reached). The dispatcher runs its real route
and send steps on a clock the test moves in 5 s ticks. Every notification must be delivered once
the receiver is back, exactly once per dedup key, with a bounded number of attempts that
/metrics shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import start_http_server

from app import telemetry
from app.alerting.config import load_config
from app.alerting.dispatcher import Dispatcher
from app.settings import Settings
from app.sweep import Selector, Sweeper
from tests.collectors.postgres.conftest import free_port
from tests.faults.conftest import pg_instance, register
from tests.faults.fault_kit import Receiver, metric, parse_metrics, write_figures

pytestmark = pytest.mark.faults
TICK = timedelta(seconds=5)
OUTAGE = timedelta(minutes=10)
FIRST, LATER = 30, 10  # instances down at the start, and four minutes into the outage


def alerting(url: str) -> dict:
    return {"route": {"receiver": "oncall", "group_by": ["instance", "alertname"], "group_wait": "30s",
                      "group_interval": "5m", "repeat_interval": "4h"},
            "receivers": [{"type": "webhook", "name": "oncall", "url": url, "timeout_s": 2}],
            "retry": {"initial": "1s", "max_backoff": "5m", "give_up_after": "1h"}}


def attempts_bound(cfg, window: timedelta) -> int:
    """The most attempts equal-jitter backoff allows in `window` (every wait at its shortest, half
    the ceiling), plus the one that succeeds."""
    waited, attempts = 0.0, 1
    while True:
        ceiling = min(cfg.retry.max_backoff.total_seconds(), cfg.retry.initial.total_seconds() * 2 ** (attempts - 1))
        if waited + ceiling / 2 > window.total_seconds():
            return attempts + 1
        waited += ceiling / 2
        attempts += 1


async def scrape(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        return parse_metrics((await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text)


def figures_of(metrics: dict[str, float]) -> dict[str, float]:
    return {"sent": metric(metrics, "dbfleet_notifications_total", receiver="oncall", status="sent"),
            "retrying": metric(metrics, "dbfleet_notifications_total", receiver="oncall", status="retrying"),
            "failed_attempts": metric(metrics, "dbfleet_notification_failures_total", receiver="oncall")}


async def test_receiver_down_for_ten_minutes(fault_store):
    hook = Receiver(mode="503").start()
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=telemetry.REGISTRY)
    sweeper = Sweeper(fault_store, Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 1},
                                            collectors={"health": {}}))
    try:
        closed = [free_port() for _ in range(FIRST + LATER)]  # nothing listens there
        await register(fault_store, [pg_instance(f"down-{i:02d}", p) for i, p in enumerate(closed[:FIRST])])
        await sweeper.sweep(["health"])
        cfg = load_config(alerting(hook.url))
        dispatcher = Dispatcher(fault_store, cfg)
        before = figures_of(await scrape(port))
        start = datetime.now(UTC)
        now, later = start, [pg_instance(f"down-{i:02d}", p) for i, p in enumerate(closed) if i >= FIRST]
        back, last_sent_at = start + OUTAGE, None
        # A notification may have just been pushed back by max_backoff when the receiver returns.
        while now < back + cfg.retry.max_backoff + TICK:
            if now >= start + timedelta(minutes=4) and later:
                await register(fault_store, later)
                await sweeper.sweep(["health"], selector=Selector(names=tuple(i.name for i in later)))
                later = []
            hook.mode = "503" if now < start + OUTAGE / 2 else "close" if now < back else "up"
            async with fault_store.raw() as conn:
                await dispatcher.route_step(conn, now)
                if (await dispatcher.send_step(conn, now)).sent:
                    last_sent_at = now
            now += TICK
        await dispatcher.aclose()
        after = figures_of(await scrape(port))
        async with fault_store.raw() as conn:
            rows = [dict(r) for r in await conn.fetch("select state, attempts, dedup_key from notifications")]
            firing = await conn.fetchval("select count(*) from alerts where status = 'firing'")
    finally:
        await sweeper.close()
        server.shutdown()
        hook.stop()
    keys = hook.by_dedup_key()
    delta = {k: after[k] - before[k] for k in after}
    bound = attempts_bound(cfg, OUTAGE)
    write_figures("receiver_outage", {
        "alerts": firing, "notifications": len(rows), "delivered": len(keys),
        "lost": len({r["dedup_key"] for r in rows} - set(keys)), "duplicated": hook.duplicates(),
        "requests_refused": hook.refused, "max_attempts": max(r["attempts"] for r in rows),
        "attempts_bound": bound, "last_delivery_after_back_s": (last_sent_at - back).total_seconds(),
        "max_backoff_s": cfg.retry.max_backoff.total_seconds(), "metrics_delta": delta})
    assert firing == FIRST + LATER and len(rows) == FIRST + LATER
    assert all(r["state"] == "sent" for r in rows)
    assert len(keys) == FIRST + LATER and all(v == ["firing"] for v in keys.values())
    assert hook.duplicates() == 0
    assert max(r["attempts"] for r in rows) <= bound
    assert last_sent_at - back <= cfg.retry.max_backoff
    # What the receiver saw is what /metrics says: one sent per notification, every refusal counted.
    assert delta["sent"] == FIRST + LATER
    assert delta["failed_attempts"] == hook.refused == delta["retrying"]

