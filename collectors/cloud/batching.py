"""Coalesce the per-instance metric requests of one sweep into few cloud API calls.

A sweep runs one collector per instance concurrently; each asks for a handful of metric
queries. CloudWatch GetMetricData takes up to 500 queries a call and Azure's metrics:getBatch up
to 50 resources, and both bill or throttle per call, so requests arriving within a short window
under the same key (region, time range...) are sent together, split at the API's limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

Flush = Callable[[Hashable, list[Any]], Awaitable[dict[Any, Any]]]


class Coalescer:
    """Gathers items submitted under one key within `window_s` and flushes them in chunks.

    `flush(key, items)` returns {item_key(item): result}; each submitter gets back the results
    of its own items. A failed chunk fails every submitter that had an item in it.
    """

    def __init__(self, flush: Flush, max_items: int, item_key: Callable[[Any], Any],
                 window_s: float = 0.05):
        self._flush = flush
        self._max = max_items
        self._item_key = item_key
        self._window_s = window_s
        self._pending: dict[Hashable, list[tuple[Sequence[Any], asyncio.Future]]] = {}
        self.calls = 0  # API calls made, for tests and the service's own metrics

    async def submit(self, key: Hashable, items: Sequence[Any]) -> dict[Any, Any]:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        waiting = self._pending.setdefault(key, [])
        waiting.append((items, future))
        if len(waiting) == 1:
            asyncio.get_running_loop().call_later(self._window_s, self._start, key)
        return await future

    def _start(self, key: Hashable) -> None:
        waiting = self._pending.pop(key, [])
        if waiting:
            asyncio.ensure_future(self._send(key, waiting))

    async def _send(self, key: Hashable, waiting: list[tuple[Sequence[Any], asyncio.Future]]) -> None:
        items = [item for batch, _ in waiting for item in batch]
        results: dict[Any, Any] = {}
        failures: dict[int, BaseException] = {}
        for start in range(0, len(items), self._max):
            chunk = items[start:start + self._max]
            self.calls += 1
            try:
                results.update(await self._flush(key, chunk))
            except Exception as e:  # noqa: BLE001 - handed to the submitters that own the chunk
                failures.update({id(item): e for item in chunk})
        for batch, future in waiting:
            if future.done():
                continue
            error = next((failures[id(i)] for i in batch if id(i) in failures), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result({self._item_key(i): results.get(self._item_key(i)) for i in batch})
