"""The worker hands freed heap back to the system between sweeps (app.scheduler.release_memory)."""

from __future__ import annotations

import os
import sys

import pytest

from app.scheduler import release_memory

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_after_a_burst_of_small_buffers_goes_back_to_the_system():
    # 2 KB buffers come from malloc (above pymalloc's 512-byte limit) and fit in glibc's heap, not in
    # mmaps of their own. The last one is kept, as a long-lived object allocated during a sweep
    # would be: it pins the heap's top, so free() alone cannot shrink it and the freed pages below
    # stay in the process until trimmed.
    buffers = [bytearray(2048) for _ in range(60_000)]
    keep = buffers[-1]
    del buffers
    before = _rss_mb()
    assert release_memory() is True
    after = _rss_mb()
    assert before - after > 50, (before, after)
    assert keep is not None
