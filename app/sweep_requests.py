"""Sweeps asked for through the API, run by the workers: claim, run, record each item's outcome.

POST /api/v1/sweeps (app/api/runs.py) stores a request and one queued item per instance. Every
worker's `sweep-requests` job claims the queued items of the instances its shard owns
(FOR UPDATE SKIP LOCKED, so claimers never wait on each other or take an item twice), runs each
with the worker's own Sweeper and writes the item's outcome as soon as it has it. Ownership is
worked out at claim time with `Shard.owns`, so after a re-shard the new owner claims.

A claim holds a lease the claimer renews while it runs. A worker that dies leaves its items
'running' until the lease runs out; any worker then puts them back in the queue, and after
MAX_ATTEMPTS claims an item is failed rather than retried for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from app.db import Store
from app.sweep import Selector, Shard

if TYPE_CHECKING:
    from app.sweep import Sweeper, SweepSummary

log = logging.getLogger(__name__)

# Short enough that a dead worker's items are re-queued within about a minute; the running
# claimer renews it every third of that, so a slow instance never loses its claim.
LEASE_S = 60.0
MAX_ATTEMPTS = 5
# When every collector of an item was skipped (another run of them held the instance, or the
# instance is backing off after connection failures), it is tried again this much later per attempt.
BUSY_RETRY_S = 5.0


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    request_id: int
    instance: str
    collectors: list[str] | None
    attempts: int


@dataclass(frozen=True)
class Outcome:
    status: str  # done, failed, or queued again (busy)
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    error: str | None = None


def claimer_name(shard: Shard) -> str:
    """Who holds a claim, in words a DBA can trace to a pod: host, process, shard."""
    return f"{socket.gethostname()} pid {os.getpid()} shard {shard.index}/{shard.count}"


_REQUEUE_EXPIRED = """
update sweep_request_items set
  status = case when attempts >= $1 then 'failed' else 'queued' end,
  finished_at = case when attempts >= $1 then now() end,
  error = case when attempts >= $1
               then format('given up after %s claims whose lease ran out (last held by %s)', attempts, claimed_by) end,
  lease_until = null, not_before = null
where status = 'running' and lease_until < now()
returning id, status, claimed_by
"""


async def requeue_expired(conn: asyncpg.Connection, max_attempts: int = MAX_ATTEMPTS) -> int:
    """Put items whose claimer stopped renewing its lease back in the queue (any worker may)."""
    rows = await conn.fetch(_REQUEUE_EXPIRED, max_attempts)
    for r in rows:
        log.warning("sweep request item %d: lease of %s ran out; %s", r["id"], r["claimed_by"],
                    "re-queued" if r["status"] == "queued" else "given up")
    return len(rows)


# One item per instance per claim: two requests for the same instance run one after the other,
# not side by side fighting over the same (instance, collector) advisory locks.
_CLAIM = """
with firsts as (
  select min(id) as id from sweep_request_items
  where status = 'queued' and instance_id = any($1::int[]) and (not_before is null or not_before <= now())
  group by instance_id order by 1 limit $2),
picked as (
  select i.id from sweep_request_items i join firsts using (id)
  where i.status = 'queued'
  for update of i skip locked)
update sweep_request_items i
set status = 'running', claimed_by = $3, claimed_at = now(), lease_until = now() + make_interval(secs => $4),
    attempts = i.attempts + 1, not_before = null
from picked, sweep_requests r, instances n
where i.id = picked.id and r.id = i.request_id and n.id = i.instance_id
returning i.id, i.request_id, n.name, r.collectors, i.attempts
"""


async def claim_items(conn: asyncpg.Connection, shard: Shard, claimer: str, limit: int,
                      lease_s: float = LEASE_S) -> list[ClaimedItem]:
    """Claim up to `limit` queued items of instances this shard owns."""
    waiting = [r[0] for r in await conn.fetch(
        "select distinct instance_id from sweep_request_items where status = 'queued'")]
    owned = [i for i in waiting if shard.owns(i)]
    if not owned:
        return []
    rows = await conn.fetch(_CLAIM, owned, limit, claimer, lease_s)
    return [ClaimedItem(r["id"], r["request_id"], r["name"], r["collectors"], r["attempts"]) for r in rows]


def outcome_of(summary: SweepSummary, instance: str) -> Outcome:
    """An item's outcome from the sweep of its one instance."""
    counts = {"ok": summary.ok, "failed": summary.failed, "skipped": summary.skipped}
    if summary.instances == 0:
        return Outcome("failed", error="not swept: the instance was disabled or removed after the request")
    if summary.failed:
        return Outcome("failed", **counts, error=summary.errors.get(instance))
    if summary.skipped and not summary.ok:
        return Outcome("queued", **counts)
    return Outcome("done", **counts)


_FINISH = """
update sweep_request_items
set status = $3::text, finished_at = case when $3::text = 'queued' then null else now() end,
    lease_until = null, ok = $4, failed = $5, skipped = $6, error = $7,
    not_before = case when $3::text = 'queued' then now() + make_interval(secs => $8) end
where id = $1 and claimed_by = $2 and attempts = $9 and status = 'running'
"""


async def record_outcome(conn: asyncpg.Connection, item: ClaimedItem, claimer: str, outcome: Outcome,
                         max_attempts: int = MAX_ATTEMPTS, busy_retry_s: float = BUSY_RETRY_S) -> None:
    """Write the outcome, unless the claim was lost meanwhile (lease ran out, another worker took it)."""
    if outcome.status == "queued" and item.attempts >= max_attempts:
        outcome = Outcome("failed", outcome.ok, outcome.failed, outcome.skipped,
                          f"every collector was skipped on {item.attempts} attempts: the instance is backing off "
                          "after connection failures, or other runs of these collectors kept it busy")
    done = await conn.execute(_FINISH, item.id, claimer, outcome.status, outcome.ok, outcome.failed, outcome.skipped,
                              outcome.error, busy_retry_s * item.attempts, item.attempts)
    if done == "UPDATE 0":
        log.warning("sweep request item %d on %s: claim lost before its outcome was written", item.id, item.instance)


async def _run_item(store: Store, sweeper: Sweeper, item: ClaimedItem, claimer: str, busy_retry_s: float) -> None:
    try:
        summary = await sweeper.sweep(item.collectors, Selector(names=(item.instance,)))
        outcome = outcome_of(summary, item.instance)
    except Exception as e:  # noqa: BLE001 - one item's failure is its outcome, not the job's end
        log.exception("sweep request item %d on %s", item.id, item.instance)
        outcome = Outcome("failed", error=f"{type(e).__name__}: {e}")
    async with store.raw() as conn:
        await record_outcome(conn, item, claimer, outcome, busy_retry_s=busy_retry_s)


async def _renew_leases(store: Store, ids: list[int], claimer: str, lease_s: float) -> None:
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            async with store.raw() as conn:
                await conn.execute("update sweep_request_items set lease_until = now() + make_interval(secs => $3) "
                                   "where id = any($1::bigint[]) and claimed_by = $2 and status = 'running'",
                                   ids, claimer, lease_s)
        except (OSError, asyncpg.PostgresError) as e:  # a store blip: the next renewal may still be in time
            log.warning("sweep request leases not renewed: %s", e)


async def run_sweep_requests(store: Store, sweeper: Sweeper, shard: Shard, concurrency: int = 32,
                             lease_s: float = LEASE_S, busy_retry_s: float = BUSY_RETRY_S,
                             claimer: str | None = None, retention_days: int = 14) -> int:
    """The worker's job: re-queue expired claims, drop requests past retention, then claim and
    run this shard's items, `concurrency` at a time, until none is due. `shard` is the sweeper's.
    Returns how many items it ran."""
    claimer = claimer or claimer_name(shard)
    async with store.raw() as conn:
        await requeue_expired(conn)
        await conn.execute("delete from sweep_requests where requested_at < now() - make_interval(days => $1)",
                           retention_days)
    ran = 0
    while True:
        async with store.raw() as conn:
            items = await claim_items(conn, shard, claimer, concurrency, lease_s)
        if not items:
            return ran
        renewing = asyncio.create_task(_renew_leases(store, [i.id for i in items], claimer, lease_s))
        try:
            # Every item is waited for: one whose outcome could not be written (the store went
            # away) stays 'running' until its lease runs out and it is queued again.
            outcomes = await asyncio.gather(*(_run_item(store, sweeper, i, claimer, busy_retry_s) for i in items),
                                            return_exceptions=True)
        finally:
            renewing.cancel()
        for item, e in zip(items, outcomes):
            if isinstance(e, Exception):
                log.error("sweep request item %d on %s: outcome not recorded: %s", item.id, item.instance, e)
        ran += len(items)
