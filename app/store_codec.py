"""The store's one JSON codec: how json and jsonb values go in and come out, on both paths.

The ORM (SQLAlchemy's asyncpg dialect, `json_serializer`/`json_deserializer`) and the raw
asyncpg pool of the hot path (`install` as the pool's connection init) use these same three
functions, so a value written by one path reads back the same through the other.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

__all__ = ["decoded", "dumps", "dumps_exact", "install", "loads"]


# One encoder, built once: json.dumps with any option builds a new JSONEncoder per call (the write
# path encodes nine parameters per instance). Store values are trees, never cyclic: no check.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str, check_circular=False)


def dumps(value: Any) -> str:
    """JSON text for the store. No NaN or Infinity (jsonb refuses them, so refuse them here,
    naming the value); values JSON has no type for (datetime, Decimal, UUID) go in as their str()."""
    return _ENCODER.encode(value)


_EXACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


def dumps_exact(value: Any) -> str:
    """JSON text for values that must read back equal (collector state diffed against its last
    copy): a value JSON has no type for is an error, not its str()."""
    return _EXACT.encode(value)


def loads(text: str | bytes) -> Any:
    return json.loads(text)


def decoded(value: Any) -> Any:
    """A json/jsonb value as Python, whether it came through a connection with this codec
    (already decoded) or through a bare asyncpg connection (JSON text)."""
    return loads(value) if isinstance(value, (str, bytes)) else value


def _encode(value: Any) -> str:
    # JSON text passes as it is: the write path encodes its parameters once, in C, and the ORM
    # hands asyncpg text its serializer made. Anything else is encoded here.
    return value if isinstance(value, str) else dumps(value)


async def install(conn: asyncpg.Connection) -> None:
    """Give a raw asyncpg connection the ORM's JSON handling (use as the pool's `init`)."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=_encode, decoder=loads, schema="pg_catalog")


# Keyword arguments for create_async_engine: the ORM path through the same functions.
ENGINE_JSON = {"json_serializer": dumps, "json_deserializer": loads}
