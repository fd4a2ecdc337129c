"""Recorded MySQL 8 / MariaDB rows for transform tests, and throwaway MariaDB servers (a primary,
a lagging replica, a replica with its SQL thread stopped) for integration tests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from collectors.spec import CollectorSpec, Context
from tests.collectors.spec_context import spec_context
from .servers import MARIADBD, MariaDB, make_replica, start_mariadb, stop_mariadb

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mysql"
FLAVOURS = ("mariadb_10_11", "mysql_8_0")


def recorded(flavour: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{flavour}.json").read_text())


def ctx_for(spec: CollectorSpec, data: dict[str, Any], now: datetime | None = None, **kw: Any) -> Context:
    """A context for `spec` on a recorded server, its default thresholds under the test's own."""
    return spec_context(spec, instance="db1", engine=kw.pop("engine", "mysql"), server_version=data["server_version"],
                        now=now or datetime.now(timezone.utc), **kw)


@pytest.fixture(params=FLAVOURS)
def flavour(request) -> dict[str, Any]:
    return recorded(request.param)


@dataclass
class Cluster:
    primary: MariaDB
    lagging: MariaDB   # MASTER_DELAY=1; tests hold a lock on it to make it fall behind for real
    stopped: MariaDB   # SQL thread stopped


@pytest.fixture(scope="session")
def mariadb_cluster():
    if not os.path.exists(MARIADBD):
        pytest.skip("mariadbd is not installed")
    servers: list[MariaDB] = []
    try:
        for name, server_id in (("primary", 1), ("lagging", 2), ("stopped", 3)):
            servers.append(start_mariadb(name, server_id))
        primary, lagging, stopped = servers
        make_replica(lagging, primary, delay_s=1)
        make_replica(stopped, primary)
        for replica in (lagging, stopped):
            replica.execute("SET GLOBAL read_only = ON")
        yield Cluster(primary, lagging, stopped)
    finally:
        for server in servers:
            stop_mariadb(server)
