"""Collector state patches: diff then apply gives the new state back, and a run's patch stays small."""

from __future__ import annotations

import copy
import json
import random

import pytest

from app.collector_state import CollectorStates, apply, diff

CASES = [
    ({"a": 1}, {"a": 1}),
    ({"a": 1}, {"a": 2}),
    ({"a": 1, "b": 2}, {"b": 2}),
    ({"a": {"x": [1, 2]}}, {"a": {"x": [1, 2, 3]}}),
    ({"r": [[1, 5], [2, 6], [3, 7]]}, {"r": [[2, 6], [3, 7], [4, 8]]}),  # a rolling window moves on
    ({"r": [1, 2, 3]}, {"r": [9]}),
    ({"r": []}, {"r": [1]}),
    ({"r": [1]}, {"r": []}),
    ({"a": 1}, [1, 2]),
    ({"a": 1}, None),
    ({"a": 1.0}, {"a": 1}),  # equal but another type: kept as written
    ({"a": None}, {"a": {"b": 1}}),
    ({"v": 1, "counters": {"q|u": [1, 2.5, None, True]}}, {"v": 1, "counters": {"q|u": [2, 3.5, None, False]}}),
]


@pytest.mark.parametrize("old,new", CASES)
def test_apply_of_diff_gives_the_new_state(old, new):
    before = copy.deepcopy(old)
    patch = diff(old, new)
    assert json.loads(json.dumps(patch)) == patch  # patches are stored as JSON
    assert apply(old, patch) == new and type(apply(old, patch)) is type(new)
    assert old == before  # nothing modified in place


def test_random_states_round_trip():
    rng = random.Random(7)

    def mutate(state: dict) -> dict:
        out = copy.deepcopy(state)
        for _ in range(rng.randint(0, 4)):
            key = f"k{rng.randint(0, 9)}"
            choice = rng.random()
            if choice < 0.3:
                out.pop(key, None)
            elif choice < 0.6:
                out[key] = [rng.randint(0, 3) for _ in range(rng.randint(0, 5))]
            elif isinstance(out.get(key), list) and out[key]:
                out[key] = out[key][rng.randint(0, 2):] + [rng.random()]
            else:
                out[key] = {"n": rng.randint(0, 3)}
        return out

    state: dict = {}
    for _ in range(500):
        new = mutate(state)
        assert apply(state, diff(state, new)) == new
        state = new


def query_state(queries: int, at: float) -> dict:
    """The shape of the PostgreSQL query_stats state: counters per statement and rolling windows."""
    return {"v": 1, "at": at, "stats_reset": None,
            "counters": {f"{q}|app": [q * at, q * 1.5 * at, q, 0, 0, 0, 0.0, None, False] for q in range(queries)},
            "queries": {str(q): {"r": [[at - 60 * i, 10, 15.0] for i in range(60, 0, -1)], "d": [], "t": "select"}
                        for q in range(queries)}}


def test_a_run_writes_a_patch_much_smaller_than_the_state():
    states = CollectorStates()
    first = query_state(200, 1_000_000.0)
    write = states.change(1, "query_stats", first)
    assert write.base is not None and write.patch is None and write.seq == 1
    states.written(1, write, "query_stats", first)
    # The next minute: every query's counters grew, each window moved on by one entry.
    second = query_state(200, 1_000_060.0)
    write = states.change(1, "query_stats", second)
    assert write.patch is not None and write.seq == 2
    assert apply(first, json.loads(write.patch)) == second
    assert len(write.patch) < len(json.dumps(second)) / 4


def test_patches_are_compacted_into_a_new_base_once_they_outgrow_it():
    states = CollectorStates()
    state = {"n": 0, "pad": "x" * 2000}
    states.written(1, states.change(1, "c", state), "c", state)
    kinds = []
    for n in range(1, 400):
        state = {"n": n, "pad": "x" * 2000}
        write = states.change(1, "c", state)
        kinds.append("base" if write.base is not None else "patch")
        states.written(1, write, "c", state)
    assert kinds.count("base") >= 1 and kinds.count("patch") > 100
    assert states.previous(1, "c") == state


def test_an_unchanged_state_writes_nothing():
    states = CollectorStates()
    state = {"a": [1, 2]}
    states.written(1, states.change(1, "c", state), "c", state)
    assert states.change(1, "c", {"a": [1, 2]}) is None


def test_stale_names_the_collectors_the_store_has_newer():
    states = CollectorStates()
    state = {"a": 1}
    states.written(1, states.change(1, "c", state), "c", state)
    assert states.stale(1, {"c": 1, "d": 0}) == []
    assert states.stale(1, {"c": 2, "d": 3}) == ["c", "d"]
