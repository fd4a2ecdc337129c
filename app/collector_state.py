"""Collector state that outlives a process: query-statistics baselines, rolling windows, counters.

Each (instance, collector) has a row in `collector_state`: a base snapshot and the number of the
newest change (`seq`); `collector_state_patches` holds the changes since the base. A run writes one
patch (what changed since the previous run: a few counters and one window entry per active query),
in the same statement as the run's results (`rebase_states` / `append_state_patches` in
app/write_statements.py), so results and state never disagree. The base is
rewritten when the patches outgrow it.

Exactly one process advances a state at a time: the sweep holds the (instance, collector) advisory
lock from reading the state's seq (`claim`) until the run is written. A process whose cached state
is older than the store's (another worker or a terminal sweep ran since) reloads it first, so two
processes never diff against the same baseline twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from app.store_codec import dumps_exact, loads

# How far a list may have moved at its front (old entries folded away) and still be sent as a
# change rather than whole: rolling windows drop at most a few entries per run.
_MAX_DROP = 4
_SHORT = 12
_MISSING = object()
# Rewrite the base when the patches since it add up to more than this many times its size, or when
# there are more of them than a reload should have to apply. A query_stats patch is about half its
# base (every active statement's counters move), so at 1x a base was rewritten every other run;
# at 4x, one run in nine (bench/sweep.py measures the bytes).
COMPACT_RATIO = 4.0
COMPACT_MAX_PATCHES = 240


def diff(old: Any, new: Any) -> Any:
    """A patch that turns `old` into `new`, or None when they are equal.

    Dicts are compared key by key and lists as "drop n from the front, append these", the shapes
    collector state changes in; anything else is replaced whole.
    """
    if old is new:
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        return _diff_dict(old, new)
    if isinstance(old, list) and isinstance(new, list):
        return _diff_list(old, new)
    return None if old == new and type(old) is type(new) else {"=": new}


def _diff_dict(old: dict, new: dict) -> dict | None:
    sets: dict[str, Any] = {}
    subs: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if before is value or (type(before) is type(value) and before == value):
            continue  # the common case, decided without a call: most of a state does not move
        if before is _MISSING:
            sets[key] = value
            continue
        change = diff(before, value)
        if change is None:
            continue
        if "=" in change:
            sets[key] = change["="]
        else:
            subs[key] = change
    dropped = [k for k in old if k not in new]
    patch: dict[str, Any] = {}
    if sets:
        patch["s"] = sets
    if subs:
        patch["p"] = subs
    if dropped:
        patch["d"] = dropped
    return patch or None


def _diff_list(old: list, new: list) -> dict | None:
    if old == new:
        return None
    if len(old) < _SHORT:
        return {"=": new}  # a row of counters: sending it whole is as small and cheaper to find
    for drop in range(min(_MAX_DROP, len(old)) + 1):
        kept = len(old) - drop
        if kept <= len(new) and new[:kept] == old[drop:]:
            if kept == 0 and drop > 0:
                break  # nothing in common: replacing is shorter
            return {"l": [drop, new[kept:]]}
    return {"=": new}


def apply(old: Any, patch: Any) -> Any:
    """The state `patch` (from `diff`) makes of `old`; `old` is not modified."""
    if patch is None:
        return old
    if "=" in patch:
        return patch["="]
    if "l" in patch:
        drop, tail = patch["l"]
        return list(old[drop:]) + list(tail)
    out = dict(old)
    for key in patch.get("d", ()):
        out.pop(key, None)
    out.update(patch.get("s", {}))
    for key, sub in patch.get("p", {}).items():
        out[key] = apply(out.get(key), sub)
    return out


@dataclass(slots=True)
class Held:
    """A state as this process last read or wrote it."""

    seq: int
    state: Any
    base_bytes: int
    patch_bytes: int
    patches: int


@dataclass(slots=True)
class StateWrite:
    """What one run changes in the store: a patch, or a new base (first run, compaction)."""

    collector: str
    seq: int
    base: str | None = None  # JSON text
    patch: str | None = None  # JSON text



_LOAD = """
select s.collector, s.seq, s.base_seq, s.base::text as base, s.patch_bytes,
       coalesce((select json_agg(p.patch order by p.seq)::text from collector_state_patches p
                 where p.instance_id = s.instance_id and p.collector = s.collector
                   and p.seq > s.base_seq and p.seq <= s.seq), '[]') as patches
from collector_state s
where s.instance_id = $1 and s.collector = any($2::text[])
"""


class CollectorStates:
    """This process's copy of the stored states, checked against the store's seq on every run."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, str], Held] = {}

    def previous(self, instance_id: int, collector: str) -> Any:
        held = self._held.get((instance_id, collector))
        return held.state if held is not None else None

    def stale(self, instance_id: int, stored_seqs: dict[str, int]) -> list[str]:
        """The collectors whose state the store has newer (or older, after a restore) than ours."""
        out = []
        for collector, seq in stored_seqs.items():
            held = self._held.get((instance_id, collector))
            if (held.seq if held is not None else 0) != seq:
                out.append(collector)
        return out

    async def load(self, conn: asyncpg.Connection, instance_id: int, collectors: list[str]) -> None:
        """Read the base and the patches since it, for the collectors whose copy is stale."""
        found = set()
        for r in await conn.fetch(_LOAD, instance_id, collectors):
            state = loads(r["base"]) if r["base"] is not None else None
            patches = loads(r["patches"])
            for patch in patches:
                state = apply(state, patch)
            self._held[(instance_id, r["collector"])] = Held(
                r["seq"], state, len(r["base"] or ""), r["patch_bytes"], len(patches))
            found.add(r["collector"])
        for collector in collectors:
            if collector not in found:
                self._held.pop((instance_id, collector), None)

    def change(self, instance_id: int, collector: str, state: Any) -> StateWrite | None:
        """The write that takes the stored state to `state`; None when nothing changed."""
        held = self._held.get((instance_id, collector))
        if held is None or held.state is None:
            return StateWrite(collector, (held.seq if held else 0) + 1, base=dumps_exact(state))
        patch = diff(held.state, state)
        if patch is None:
            return None
        text = dumps_exact(patch)
        if (held.patch_bytes + len(text) > COMPACT_RATIO * max(held.base_bytes, 1024)
                or held.patches + 1 > COMPACT_MAX_PATCHES):
            return StateWrite(collector, held.seq + 1, base=dumps_exact(state))
        return StateWrite(collector, held.seq + 1, patch=text)

    def written(self, instance_id: int, write: StateWrite | None, collector: str, state: Any) -> None:
        """Record that `write` (from `change`) is in the store."""
        if write is None:
            held = self._held.get((instance_id, collector))
            if held is not None:
                held.state = state
            return
        held = self._held.get((instance_id, collector))
        if write.base is not None:
            self._held[(instance_id, collector)] = Held(write.seq, state, len(write.base), 0, 0)
        else:
            assert held is not None and write.patch is not None
            held.seq, held.state = write.seq, state
            held.patch_bytes += len(write.patch)
            held.patches += 1

    def forget(self, instance_id: int) -> None:
        for key in [k for k in self._held if k[0] == instance_id]:
            del self._held[key]


# Session advisory locks per (instance, collector), then the stored seq of the ones we got. A
# plpgsql function so that the seq is read after the lock is taken (each statement in a volatile
# function sees a fresh snapshot): a state written and unlocked by another process just before
# we locked is seen, not missed.
CLAIM = """
select collector, seq from dbfleet_claim($1, $2::text[], $3::int[])
"""
