"""Coalescer: concurrent requests under one key share calls, split at the API's limit."""

from __future__ import annotations

import asyncio

import pytest

from collectors.cloud.batching import Coalescer


async def test_concurrent_requests_share_calls_split_at_the_limit():
    sent: list[list[str]] = []

    async def flush(key, items):
        sent.append(list(items))
        return {i: f"{key}:{i}" for i in items}

    co = Coalescer(flush, max_items=500, item_key=lambda i: i)
    # 80 instances x 7 queries = 560 queries: two calls, not 80.
    batches = [[f"i{n}q{q}" for q in range(7)] for n in range(80)]
    results = await asyncio.gather(*(co.submit("eu-west-1", b) for b in batches))
    assert [len(s) for s in sent] == [500, 60]
    assert results[79] == {f"i79q{q}": f"eu-west-1:i79q{q}" for q in range(7)}


async def test_different_keys_never_share_a_call():
    keys = []

    async def flush(key, items):
        keys.append(key)
        return {i: key for i in items}

    co = Coalescer(flush, max_items=500, item_key=lambda i: i)
    a, b = await asyncio.gather(co.submit("eu-west-1", ["x"]), co.submit("us-east-1", ["y"]))
    assert a == {"x": "eu-west-1"} and b == {"y": "us-east-1"} and sorted(keys) == ["eu-west-1", "us-east-1"]


async def test_a_failed_chunk_fails_only_its_submitters():
    async def flush(key, items):
        if "bad" in items:
            raise RuntimeError("denied")
        return {i: 1 for i in items}

    co = Coalescer(flush, max_items=2, item_key=lambda i: i)
    ok, failed = await asyncio.gather(co.submit("k", ["a", "b"]), co.submit("k", ["bad"]), return_exceptions=True)
    assert ok == {"a": 1, "b": 1}
    assert isinstance(failed, RuntimeError)
    with pytest.raises(RuntimeError):
        await co.submit("k", ["bad"])
