"""`dbfleet serve --workers N`: N processes on one port, each with the parent's settings and store.

A real `dbfleet serve` over a migrated store of this module's own; the workers are found with psutil
and each must have answered requests (its CPU time grows while a page is fetched 60 times).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from app.auth import Role, create_key
from app.db import Store
from tests.conftest import migrated_database, wait_for_serve

DBFLEET = str(Path(sys.executable).parent / "dbfleet")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


@pytest.fixture(scope="module")
async def two_workers(tmp_path_factory):
    """`dbfleet serve` with api.workers: 2 from its config file (no --workers flag)."""
    tmp = tmp_path_factory.mktemp("serve_workers")
    async with migrated_database(f"dbf_web_workers_{uuid.uuid4().hex[:8]}") as url:
        store = Store(url, pool_size=2)
        async with store.sessions() as session, session.begin():
            key = await create_key(session, "workers-viewer", Role.viewer)
        await store.dispose()
        config = tmp / "dbfleet.yaml"
        config.write_text(json.dumps({"api": {"workers": 2}, "console": {"proxy_sign_in": {
            "header": "X-Auth-User", "trusted_proxies": ["127.0.0.1/32"], "roles": {"proxy-viewer": "viewer"}}}}))
        port, log = _free_port(), tmp / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen([DBFLEET, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                      env={**os.environ, "DBFLEET_DATABASE_URL": url, "DBFLEET_CONFIG": str(config)},
                                      stdout=out, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            try:
                await wait_for_serve(base, server, log)
                yield {"base": base, "key": key, "server": server}
            finally:
                server.terminate()
                server.wait(timeout=30)


def _workers(server: subprocess.Popen) -> list[psutil.Process]:
    # uvicorn's workers are spawned processes: one python child per worker (its spawn helper,
    # multiprocessing's resource tracker, is not one).
    return [c for c in psutil.Process(server.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())]


async def test_api_workers_from_the_config_file_start_that_many_processes_and_each_serves(two_workers):
    workers = _workers(two_workers["server"])
    assert len(workers) == 2, [w.cmdline() for w in workers]
    async with httpx.AsyncClient(base_url=two_workers["base"]) as c:
        cookie = (await c.post("/signin", data={"key": two_workers["key"]})).cookies["dbfleet_session"]
    before = [_cpu(w) for w in workers]
    # Concurrent requests, so the kernel hands connections to both processes.
    async def fetch() -> int:
        async with httpx.AsyncClient(base_url=two_workers["base"], cookies={"dbfleet_session": cookie}) as c:
            return (await c.get("/findings")).status_code

    codes = [code for _ in range(6) for code in await asyncio.gather(*(fetch() for _ in range(10)))]
    assert codes == [200] * 60  # one sign-in (a row in the store) is good in every process
    grew = [_cpu(w) - b for w, b in zip(workers, before)]
    assert all(g > 0 for g in grew), grew


async def test_every_worker_reads_the_same_settings(two_workers):
    # Proxy sign-in exists only in the config file: each worker read it from the same DBFLEET_CONFIG.
    async def proxy_sign_in() -> int:
        async with httpx.AsyncClient(base_url=two_workers["base"], headers={"X-Auth-User": "proxy-viewer"}) as c:
            return (await c.get("/signin")).status_code

    assert set(await asyncio.gather(*(proxy_sign_in() for _ in range(20)))) == {303}


async def test_stopping_the_parent_stops_every_worker(tmp_path):
    async with migrated_database(f"dbf_web_workers_stop_{uuid.uuid4().hex[:8]}") as url:
        port, log = _free_port(), tmp_path / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen([DBFLEET, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "3"],
                                      env={**os.environ, "DBFLEET_DATABASE_URL": url}, stdout=out,
                                      stderr=subprocess.STDOUT)
            try:
                await wait_for_serve(f"http://127.0.0.1:{port}", server, log)
                workers = _workers(server)
                assert len(workers) == 3
            finally:
                server.terminate()
                server.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, [p.pid for p in alive]


@pytest.mark.parametrize("value", ["0", "65"])
def test_a_workers_count_out_of_range_is_refused_before_anything_starts(value):
    r = subprocess.run([DBFLEET, "serve", "--workers", value], capture_output=True, text=True,
                       env={**os.environ, "DBFLEET_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"})
    assert r.returncode == 2
    assert "--workers" in r.stderr
