"""Faults against a loopback receiver: 500 then recovery, a timeout, a 400, a dispatcher killed
mid-send, two dispatchers at once. Every alert arrives once per dedup key, resolves after triggers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from alerting_helpers import T0, put_alert

from app.alerting.config import load_config
from app.alerting.dispatcher import dispatch_once, run_dispatcher
from app.db import Store

HERE = Path(__file__).resolve().parent


def raw_config(url: str, **receiver) -> dict:
    return {
        "route": {"receiver": "ops", "group_by": ["instance"], "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"type": "webhook", "name": "ops", "url": url + "/hook", "timeout_s": 2, **receiver}],
        "retry": {"initial": "1s", "max_backoff": "10s", "give_up_after": "1h"},
        "poll_interval": "100ms",
    }


async def notification_rows(store: Store) -> list[dict]:
    async with store.raw() as conn:
        return [dict(r) for r in await conn.fetch("select * from notifications order by id")]


def counter(name: str, **labels: str) -> float:
    from app.telemetry import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_500_then_recovery_is_retried_with_backoff(store, receiver_factory):
    hook = receiver_factory(script=__import__("collections").deque([(500, 0), (502, 0)]))
    before = (counter("dbfleet_notifications_total", receiver="ops", status="sent"),
              counter("dbfleet_notification_failures_total", receiver="ops"))
    cfg = load_config(raw_config(hook.url))
    await put_alert(store, "a")
    r = await dispatch_once(store, cfg, T0)
    assert (r.sent, r.retrying) == (0, 1)
    assert (await dispatch_once(store, cfg, T0)).sent == 0  # not before its backoff
    assert (await dispatch_once(store, cfg, T0 + timedelta(minutes=1))).retrying == 1
    assert (await dispatch_once(store, cfg, T0 + timedelta(minutes=2))).sent == 1
    [row] = await notification_rows(store)
    assert (row["state"], row["attempts"]) == ("sent", 3)
    assert len(hook.requests) == 3 and len(hook.accepted) == 1
    async with store.raw() as conn:
        status = await conn.fetchrow("select * from receiver_status where receiver = 'ops'")
    assert status["last_success_at"] is not None and "HTTP 502" in status["last_error"]
    after = (counter("dbfleet_notifications_total", receiver="ops", status="sent"),
             counter("dbfleet_notification_failures_total", receiver="ops"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 2)


async def test_a_timeout_is_retryable(store, receiver_factory):
    hook = receiver_factory(script=__import__("collections").deque([(503, 3)]))
    cfg = load_config(raw_config(hook.url, timeout_s=0.5))
    await put_alert(store, "a")
    r = await dispatch_once(store, cfg, T0)
    assert r.retrying == 1
    [row] = await notification_rows(store)
    assert "timed out" in row["last_error"]
    assert (await dispatch_once(store, cfg, T0 + timedelta(minutes=1))).sent == 1


async def test_a_400_is_permanent_recorded_and_secret_free(store, receiver_factory):
    hook = receiver_factory(check=lambda req: f"rejected {req.path}")  # echoes the URL, token and all
    os.environ["DBF_AL_HOOK_URL"] = hook.url + "/hook?token=tok-SECRET-123"
    cfg = load_config({**raw_config(hook.url), "receivers": [
        {"type": "webhook", "name": "ops", "url_ref": "env:DBF_AL_HOOK_URL"}]})
    await put_alert(store, "a")
    r = await dispatch_once(store, cfg, T0)
    assert (r.sent, r.failed) == (0, 1)
    assert (await dispatch_once(store, cfg, T0 + timedelta(hours=1))).failed == 0  # never retried
    [row] = await notification_rows(store)
    assert row["state"] == "failed" and "HTTP 400" in row["last_error"]
    async with store.raw() as conn:
        status = await conn.fetchrow("select * from receiver_status where receiver = 'ops'")
    assert status["failed_total"] == 1
    assert "tok-SECRET-123" not in row["last_error"] + status["last_error"]
    assert len(hook.requests) == 1


async def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "gave up waiting"
        await asyncio.sleep(0.05)


def by_dedup_key(requests) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for r in requests:
        seen[r.json["dbfleet"]["dedupKey"]].append(r.json["status"])
    return seen


async def test_a_dispatcher_killed_mid_send_loses_and_duplicates_nothing(store, receiver_factory, tmp_path):
    # The first request is held (as by a hung receiver) until the dispatcher has been killed.
    hook = receiver_factory(script=__import__("collections").deque([(503, 15)]))
    raw = raw_config(hook.url, timeout_s=30)
    for i in range(5):
        await put_alert(store, f"a{i}", instance=f"db{i}", starts_at=datetime.now(timezone.utc))
    log = open(tmp_path / "dispatcher.log", "w")
    proc = subprocess.Popen([sys.executable, str(HERE / "dispatcher_proc.py")], stdout=log, stderr=log,
                            env={**os.environ, "DBF_AL_STORE": store.url, "DBF_AL_CONFIG": json.dumps(raw)})
    try:
        await _wait_for(lambda: hook.received == 5 and len(hook.accepted) == 4)
        sent = []

        async def recorded() -> None:  # what came back is written while the fifth is still in flight
            sent[:] = [r for r in await notification_rows(store) if r["state"] == "sent"]

        for _ in range(200):
            await recorded()
            if len(sent) == 4:
                break
            await asyncio.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    held = [r for r in await notification_rows(store) if r["state"] == "pending"]
    assert len(held) == 1 and held[0]["lease_until"] is not None  # in flight when it died
    # A restarted dispatcher sends it once the dead one's lease has run out.
    cfg = load_config(raw)
    later = held[0]["lease_until"] + timedelta(seconds=1)
    assert (await dispatch_once(store, cfg, later)).sent == 1
    keys = by_dedup_key(hook.accepted)
    assert len(keys) == 5 and all(v == ["firing"] for v in keys.values())
    for i in range(5):
        await put_alert(store, f"a{i}", status="resolved", instance=f"db{i}")
    await dispatch_once(store, cfg, later + timedelta(seconds=2))
    assert all(v == ["firing", "resolved"] for v in by_dedup_key(hook.accepted).values())
    assert len(hook.accepted) == 10


async def test_two_dispatchers_send_each_notification_once(store, receiver_factory):
    hook = receiver_factory()
    cfg = load_config(raw_config(hook.url))
    n = 200
    stores = [Store(store.url, pool_size=3) for _ in range(2)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_dispatcher(s, None, stop, config=cfg)) for s in stores]
    try:
        now = datetime.now(timezone.utc)
        for i in range(n):
            await put_alert(store, f"a{i}", instance=f"db{i}", starts_at=now)
        await _wait_for(lambda: len(hook.requests) >= n)
        for i in range(n):
            await put_alert(store, f"a{i}", status="resolved", instance=f"db{i}", starts_at=now)
        await _wait_for(lambda: len(hook.requests) >= 2 * n)
        await asyncio.sleep(1.5)  # a further group tick: nothing more may arrive
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for s in stores:
            await s.dispose()
    keys = by_dedup_key(hook.requests)
    assert len(keys) == n and all(v == ["firing", "resolved"] for v in keys.values())
    assert len(hook.requests) == 2 * n
