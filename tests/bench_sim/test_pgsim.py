"""The wire-protocol simulator (bench/pgsim): asyncpg connects, the real collectors run against it
and find what the recorded server showed them; many connections share one listener."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from bench.pgsim.collect import Sweep, found
from bench.pgsim.server import RECORDING, serve, serve_servers
from collectors.engines.base import SessionLimits, Target
from collectors.engines.pg import connect_pg

RECORDED = json.loads(RECORDING.read_text())


@pytest.fixture
async def pgsim():
    server = await serve()
    try:
        yield server.sockets[0].getsockname()[1], server.recorded
    finally:
        server.close()
        await server.wait_closed()


def _target(port: int, n: int = 0, tls_mode: str = "prefer") -> Target:
    return Target(f"sim{n}", "postgres", "127.0.0.1", port, f"dbf_ask14_sim_{n}", "dbfleet", tls_mode=tls_mode)


async def test_the_collectors_find_on_the_simulator_what_the_recorded_server_showed(pgsim):
    port, recorded = pgsim
    conn = await connect_pg(_target(port), SessionLimits())  # tls prefer: the simulator declines TLS
    try:
        assert conn.server_version == 150000 + int(RECORDED["server"]["server_version"].split(".")[1].split()[0])
        sweep = Sweep("sim")
        for _ in range(3):  # cold, then steady from the states the runs keep
            results = await sweep.run(conn)
        assert sorted(list(f) for f in found(results)) == RECORDED["findings"]
        assert RECORDED["findings"], "the recording holds the planted problems"
        assert recorded.served > 0
    finally:
        await conn.close()


async def test_one_listener_serves_many_sessions_at_once(pgsim):
    port, _ = pgsim
    conns = await asyncio.gather(*(connect_pg(_target(port, n, "disable"), SessionLimits()) for n in range(200)))
    try:
        rows = await asyncio.gather(*(c.fetch(RECORDED["identity_sql"]) for c in conns))
        assert all(r[0]["v"] >= 150000 for r in rows)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_a_statement_it_never_recorded_is_an_error_and_the_session_goes_on(pgsim):
    port, _ = pgsim
    conn = await connect_pg(_target(port), SessionLimits())
    try:
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="no recorded answer"):
            await conn.fetch("select 'never recorded'")
        assert (await conn.fetch(RECORDED["identity_sql"]))[0]["standby"] is False
    finally:
        await conn.close()


async def test_several_simulated_servers_tell_apart_by_system_identifier():
    servers = await serve_servers(2)
    try:
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        conns = [await connect_pg(_target(p, n, "disable"), SessionLimits()) for n, p in enumerate(ports)]
        identities = [await c.identify() for c in conns]
        assert ports[0] != ports[1] and identities[0].server_id != identities[1].server_id
        assert all(i.role == "primary" for i in identities)
        await asyncio.gather(*(c.close() for c in conns))
    finally:
        for s in servers:
            s.close()
            await s.wait_closed()
