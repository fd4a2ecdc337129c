"""Migration 0008: an existing inventory gets one server per endpoint (or cloud id), every instance
is linked, and no findings row changes. A real store at the revision before 0008."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from app.db import alembic_config, migrate
from tests.conftest import create_database, drop_database

INSTANCES = """
insert into instances (name, engine, host, port, dbname, "user", credential, tls_mode, tags, cloud) values
 ('shop',  'mariadb',  'DB1.internal', 3306, 'shop',  'dbfleet', 'env:DBFLEET_CRED_M', 'require',
  '{"env": "prod", "team": "shop"}', '{}'),
 ('clean', 'mysql',    'db1.internal', 3306, 'clean', 'dbfleet', 'env:DBFLEET_CRED_M', 'prefer',
  '{"env": "prod", "team": "data"}', '{}'),
 ('orders', 'postgres', 'db1.internal', 5432, 'orders', 'mon', null, 'prefer', '{}', '{}'),
 ('rds-a', 'postgres', 'rds-a.abc.eu-west-1.rds.amazonaws.com', 5432, 'postgres', 'master', 'aws-iam', 'require',
  '{}', '{"provider": "aws", "arn": "arn:aws:rds:eu-west-1:1:db:rds-a", "instance_id": "rds-a"}'),
 ('named-like-endpoint', 'postgres', 'db2', 5432, '', '', null, 'prefer', '{}', '{}')
"""
FINDINGS = """
insert into findings (fingerprint, instance_id, collector, "check", object, severity, state, title, details,
                      recommendation, first_seen, last_seen, opened_at)
select md5(i.name || n), i.id, 'health', 'connections_near_limit', 'server', 'warning',
       case when n = 1 then 'open' else 'resolved' end, 'Connections near the limit', '{"pct": 91}', '',
       now() - interval '3 days', now(), now() - interval '1 day'
from instances i, generate_series(1, 2) n
"""


@pytest.fixture
async def store_before_servers():
    name = f"dbf_srv_mig_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    before = ScriptDirectory.from_config(alembic_config(url)).get_revision("0008").down_revision
    await asyncio.to_thread(migrate, url, before)
    yield url
    await drop_database(name)


async def test_existing_instances_get_servers_and_findings_are_untouched(store_before_servers):
    url = store_before_servers
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(INSTANCES)
        await conn.execute(FINDINGS)
        findings_before = [dict(r) for r in await conn.fetch("select * from findings order by id")]
        await asyncio.to_thread(migrate, url, "0008")  # later migrations add columns of their own
        servers = {r["name"]: dict(r) for r in await conn.fetch("select * from servers")}
        linked = {r["name"]: r["server"] for r in await conn.fetch(
            "select i.name, s.name as server from instances i join servers s on s.id = i.server_id")}
        findings_after = [dict(r) for r in await conn.fetch("select * from findings order by id")]
        nullable = await conn.fetchval("select is_nullable from information_schema.columns "
                                       "where table_name = 'instances' and column_name = 'server_id'")
    finally:
        await conn.close()

    assert set(servers) == {"DB1.internal:3306", "db1.internal:5432", "rds-a", "db2:5432"}
    # MariaDB and MySQL entries on one endpoint (host case aside) are one server; PostgreSQL on the
    # same host is another.
    assert linked == {"shop": "DB1.internal:3306", "clean": "DB1.internal:3306", "orders": "db1.internal:5432",
                      "rds-a": "rds-a", "named-like-endpoint": "db2:5432"}
    maria = servers["DB1.internal:3306"]
    # What both entries share is the server's; what they disagree on keeps its default.
    assert (maria["user"], maria["credential"], maria["tls_mode"]) == ("dbfleet", "env:DBFLEET_CRED_M", "prefer")
    assert json.loads(maria["tags"]) == {"env": "prod"}
    assert json.loads(servers["rds-a"]["cloud"])["arn"] == "arn:aws:rds:eu-west-1:1:db:rds-a"
    assert json.loads(servers["db1.internal:5432"]["cloud"]) == {}
    assert servers["rds-a"]["credential"] == "aws-iam" and servers["rds-a"]["databases"] is None
    assert nullable == "NO"
    assert findings_after == findings_before and len(findings_after) == 10


async def test_rows_written_after_the_migration_are_linked_by_the_store(store_before_servers):
    url = store_before_servers
    await asyncio.to_thread(migrate, url)
    conn = await asyncpg.connect(url)
    insert = ("insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, cloud) "
              "values ($1, $2, $3, $4, $5, '', 'prefer', $6::jsonb) returning server_id")
    try:
        a = await conn.fetchval(insert, "a", "postgres", "pg9", 5432, "shop", "{}")
        b = await conn.fetchval(insert, "b", "aurora-postgres", "PG9", 5432, "clean", "{}")
        c = await conn.fetchval(insert, "c", "mysql", "pg9", 5432, "", "{}")  # another engine family
        # An endpoint change moves the entry to the server at its new endpoint.
        moved = await conn.fetchval("update instances set host = 'pg10' where name = 'b' returning server_id")
        # Discovery stamping a cloud id on a manual entry gives its server that identity.
        await conn.execute("update instances set cloud = '{\"arn\": \"arn:aws:rds:x:1:db:pg9\"}' where name = 'a'")
        names = await conn.fetch("select id, name, cloud from servers order by id")
        again = await conn.fetchval("select server_id from instances where name = 'a'")
    finally:
        await conn.close()
    assert a == b != c and moved not in (a, c)
    assert [r["name"] for r in names] == ["pg9:5432", "pg9:5432-2", "pg10:5432"]
    assert again == a and "arn:aws:rds:x:1:db:pg9" in names[0]["cloud"]
