"""The version-key lookup: SQL (or anything) keyed by the lowest server version it works on."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def closest_lower(by_version: Mapping[int, T], version: int) -> T | None:
    """The value under the closest lower (or equal) version key, None if the server is older than all.

    pgwatch's rule: a query keyed 90600 serves every server from 9.6 until the next key.
    """
    keys = sorted(by_version)
    i = bisect.bisect_right(keys, version)
    return by_version[keys[i - 1]] if i else None


def closest_lower_or_raise(by_version: Mapping[int, T], version: int, what: str) -> T:
    """closest_lower, but a server older than every key is an error ("<what> version >= ...")."""
    found = closest_lower(by_version, version)
    if found is None:
        raise ValueError(f"{what} version >= {min(by_version, default='?')}, server is {version}")
    return found
