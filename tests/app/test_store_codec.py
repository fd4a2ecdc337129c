"""One JSON codec on both paths to the store: a value written by one reads back the same by the other."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy import select, text

from app import store_codec
from app.models import Instance
from tests.conftest import pg_url

VALUES = [{"env": "prod", "nested": {"a": [1, 2.5, None, True]}, "ünï": "cödé"}, [], {}, "text", 3, None]


@pytest.mark.parametrize("value, expected", [
    ({"a": 1, "b": [1, 2]}, '{"a":1,"b":[1,2]}'),
    ({"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}, '{"at":"2026-01-02 03:04:05+00:00"}'),
    ({"n": Decimal("1.50")}, '{"n":"1.50"}'),
])
def test_dumps_is_compact_and_strs_what_json_has_no_type_for(value, expected):
    assert store_codec.dumps(value) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"x": float("-inf")}])
def test_dumps_refuses_what_jsonb_would(bad):
    with pytest.raises(ValueError, match="JSON compliant"):
        store_codec.dumps(bad)


def test_dumps_exact_refuses_what_would_not_read_back_equal():
    assert store_codec.dumps_exact({"w": [1, 2.5]}) == '{"w":[1,2.5]}'
    with pytest.raises(TypeError, match="datetime"):
        store_codec.dumps_exact({"at": datetime(2026, 1, 2, tzinfo=UTC)})
    with pytest.raises(ValueError, match="JSON compliant"):
        store_codec.dumps_exact([float("nan")])


def test_decoded_accepts_text_or_python():
    assert store_codec.decoded('{"a": 1}') == {"a": 1} == store_codec.decoded({"a": 1})
    assert store_codec.decoded(b"[1]") == [1]
    assert store_codec.decoded(None) is None


async def test_the_orm_and_the_raw_pool_read_and_write_the_same_values(clean_store):
    async with clean_store.raw() as conn:
        for value in VALUES:
            # The raw pool takes JSON text as it is, or a Python value it encodes.
            assert await conn.fetchval("select $1::jsonb", json.dumps(value)) == value
            assert await conn.fetchval("select $1::jsonb", store_codec.dumps(value)) == value
            assert await conn.fetchval("select $1::json", store_codec.dumps(value)) == value
        assert await conn.fetchval("select $1::jsonb", {"a": [1]}) == {"a": [1]}
    tags = VALUES[0]
    async with clean_store.sessions() as session, session.begin():
        session.add(Instance(name="pg-codec", engine="postgres", host="h", port=5432, dbname="app", user="postgres",
                             tls_mode="prefer", tags=tags))
    async with clean_store.raw() as conn:
        assert await conn.fetchval("select tags from instances where name = 'pg-codec'") == tags
        await conn.execute("update instances set overrides = $1 where name = 'pg-codec'",
                           store_codec.dumps({"health": {"interval_s": 30}}))
    async with clean_store.sessions() as session:
        inst = (await session.execute(select(Instance).where(Instance.name == "pg-codec"))).scalar_one()
        assert inst.tags == tags and inst.overrides == {"health": {"interval_s": 30}}
        assert (await session.execute(text("select tags from instances where name = 'pg-codec'"))).scalar_one() == tags


async def test_a_bare_connection_sees_text_until_the_codec_is_installed(clean_store):
    conn = await asyncpg.connect(pg_url(clean_store.url.rsplit("/", 1)[1]))
    try:
        raw = await conn.fetchval("select '{\"a\": 1}'::jsonb")
        assert isinstance(raw, str) and store_codec.decoded(raw) == {"a": 1}
        await store_codec.install(conn)
        assert await conn.fetchval("select '{\"a\": 1}'::jsonb") == {"a": 1}
    finally:
        await conn.close()
