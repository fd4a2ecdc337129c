"""Record what dbfleet's PostgreSQL collectors ask a real server and what it answers.

    .venv/bin/python bench/pgsim/record.py                 # 127.0.0.1:5432, database dbf_ask14_pgsim_rec
    .venv/bin/python bench/pgsim/record.py --own-cluster   # a throwaway PG 15 with pg_stat_statements preloaded

It plants the bench fleet's problems (bench/fleet.py SCHEMA and WORKLOAD) in a fresh database,
runs every PostgreSQL collector four times on one session (cold, then steady, states carried as
a sweep carries them), and writes each distinct statement with its parameter and column type OIDs,
its rows (or its error) and its command tag to bench/pgsim/recording.json. The simulator answers
from that file; refresh it with this script, never by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import decimal
import importlib.util
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.pgsim.collect import Sweep, found
from collectors.engines.base import SessionLimits, Target
from collectors.engines.pg import IDENTITY_SQL, PgConnection, connect_pg

RECORDING = Path(__file__).with_name("recording.json")
DB = "dbf_ask14_pgsim_rec"
SWEEPS = 4


def _fleet() -> Any:
    spec = importlib.util.spec_from_file_location("bench_fleet", REPO / "bench" / "fleet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_json(value: Any) -> Any:
    """A driver value as JSON the simulator turns back into wire bytes for its column's type."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return {"us": value // dt.timedelta(microseconds=1)}
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if hasattr(value, "exploded") or type(value).__name__.startswith("IPv"):
        return str(value)
    return value


class Recording:
    """Distinct statements by SQL text and arguments; a later answer to the same replaces an earlier one.

    asyncpg's own statements (type introspection for arrays such as int4[], its jit switch) are
    seen by a query logger and recorded afterwards, by running them again with the same arguments.
    """

    def __init__(self) -> None:
        self.statements: dict[tuple[str, str], dict[str, Any]] = {}
        self.driver: dict[tuple[str, str], tuple[str, tuple]] = {}

    def watch(self, raw: asyncpg.Connection) -> None:
        def seen(record: Any) -> None:
            key = (record.query, json.dumps(to_json(list(record.args or ()))))
            if key not in self.statements:
                self.driver[key] = (record.query, tuple(record.args or ()))
        raw.add_query_logger(seen)

    async def driver_statements(self, raw: asyncpg.Connection) -> None:
        for key, (sql, args) in list(self.driver.items()):
            if key not in self.statements:
                await self.run(raw, sql, args)

    async def run(self, raw: asyncpg.Connection, sql: str, args: tuple) -> list[asyncpg.Record]:
        entry: dict[str, Any] = {"sql": sql, "args": to_json(list(args))}
        key = (sql, json.dumps(entry["args"]))
        try:
            stmt = await raw.prepare(sql)
        except asyncpg.PostgresError as e:
            entry["error"] = {"sqlstate": e.sqlstate, "message": str(e), "at": "parse"}
            self.statements[key] = entry
            raise
        entry["params"] = [t.oid for t in stmt.get_parameters()]
        entry["columns"] = [[a.name, a.type.oid] for a in stmt.get_attributes()]
        try:
            rows = await stmt.fetch(*args)
        except asyncpg.PostgresError as e:
            entry["error"] = {"sqlstate": e.sqlstate, "message": str(e), "at": "execute"}
            self.statements[key] = entry
            raise
        entry["rows"] = [[to_json(v) for v in r.values()] for r in rows]
        entry["tag"] = stmt.get_statusmsg() or f"SELECT {len(rows)}"
        self.statements[key] = entry
        return rows


class RecordingConnection(PgConnection):
    """The collectors' own adapter, recording every statement it sends through prepare + fetch."""

    recording: Recording

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self.recording.run(self.raw, sql, args)
        if not rows:
            return []
        keys = tuple(rows[0].keys())
        return [dict(zip(keys, r)) for r in rows]


async def plant(host: str, port: int) -> None:
    fleet = _fleet()
    admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    try:
        await admin.execute(f"drop database if exists {DB} with (force)")
        await admin.execute(f"create database {DB}")
    finally:
        await admin.close()
    app = await asyncpg.connect(host=host, port=port, user="postgres", database=DB)
    try:
        try:
            await app.execute(fleet.SCHEMA)
        except asyncpg.UndefinedFileError:  # no hypopg on this server: the rest of the schema still stands
            await app.execute(fleet.SCHEMA.replace("create extension if not exists hypopg;", ""))
        for i in range(8):
            for sql, args in fleet.WORKLOAD:
                await app.execute(sql, *args(i))
    finally:
        await app.close()


async def record(host: str, port: int) -> dict[str, Any]:
    await plant(host, port)
    recording = Recording()
    base = await connect_pg(Target("pgsim-record", "postgres", host, port, DB, "postgres", tls_mode="disable"),
                            SessionLimits())
    conn = RecordingConnection(base.raw, base.server_version, base.is_standby)
    conn.recording = recording
    try:
        recording.watch(conn.raw)
        await recording.run(conn.raw, IDENTITY_SQL, ())
        sweep, results = Sweep("pgsim-record"), {}
        for _ in range(SWEEPS):
            results = await sweep.run(conn)
        await recording.driver_statements(conn.raw)
        settings = conn.raw.get_settings()
        server = {k: getattr(settings, k) for k in ("server_version", "server_encoding", "client_encoding",
                                                    "DateStyle", "TimeZone", "integer_datetimes",
                                                    "standard_conforming_strings") if hasattr(settings, k)}
    finally:
        await conn.close()
        admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
        await admin.execute(f"drop database if exists {DB} with (force)")
        await admin.close()
    return {"recorded_from": f"PostgreSQL {server.get('server_version', '?')}, bench/fleet.py schema and workload",
            "server": server, "identity_sql": IDENTITY_SQL,
            "findings": sorted(list(f) for f in found(results)),
            "statements": [recording.statements[k] for k in sorted(recording.statements)]}


def own_cluster() -> tuple[dict, Any]:
    fleet = _fleet()
    root = Path(tempfile.mkdtemp(prefix="dbf_ask14_pgsim_"))
    shutil.chown(root, fleet.OS_USER)
    entry = fleet.init_cluster(root, f"rec_{uuid.uuid4().hex[:6]}", 50)
    return entry, fleet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--own-cluster", action="store_true",
                   help="start a throwaway PostgreSQL 15 with pg_stat_statements preloaded (the shared server lacks it)")
    p.add_argument("--out", type=Path, default=RECORDING)
    args = p.parse_args()
    entry = fleet = None
    if args.own_cluster:
        entry, fleet = own_cluster()
        args.port = entry["port"]
    try:
        out = asyncio.run(record(args.host, args.port))
    finally:
        if entry is not None:
            fleet.stop(entry)
            shutil.rmtree(Path(entry["base"]).parent, ignore_errors=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(out['statements'])} statements, {len(out['findings'])} findings -> {args.out}")


if __name__ == "__main__":
    main()
