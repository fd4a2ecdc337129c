"""A row lock and two sessions queued behind it on a real PostgreSQL, read through the live API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from collectors.common.blocking import tree_members

BASE = "/api/v1/instances"


async def assert_lock_queue_seen(client, auth, instance: str, session: Callable[[], Awaitable[asyncpg.Connection]]):
    """/locks gives the holder's tree with both waiters below it; /activity shows the idle holder."""
    holder, w1, w2 = await session(), await session(), await session()
    tx = holder.transaction()
    await tx.start()
    await holder.execute("update t set v = 1 where id = 1")
    waits = [asyncio.create_task(w.execute("update t set v = 2 where id = 1")) for w in (w1, w2)]
    await asyncio.sleep(1)
    try:
        locks = await client.get(f"{BASE}/{instance}/locks", headers=auth["viewer"])
        activity = await client.get(f"{BASE}/{instance}/activity", headers=auth["viewer"])
    finally:
        await tx.rollback()
        await asyncio.gather(*waits)
        for c in (holder, w1, w2):
            await c.close()
    assert locks.status_code == 200, locks.text
    [tree] = [t for t in locks.json()["trees"] if t["session_id"] == holder.get_server_pid()]
    assert {n["session_id"] for n in tree_members(tree)} == {w1.get_server_pid(), w2.get_server_pid()}
    mine = {s["session_id"]: s for s in activity.json()["sessions"]}
    assert mine[holder.get_server_pid()]["state"] == "idle in transaction"
    assert mine[w1.get_server_pid()]["wait_class"] == "Lock"
