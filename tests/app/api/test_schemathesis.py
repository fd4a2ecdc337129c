"""Schemathesis against a real `dbfleet serve`: every check, a fixed seed, 1,000+ cases and the stateful phase.

The server is the `dbfleet serve` process on a loopback port, on a migrated store of its own
(dbf_st18_*) with a seeded fleet: two PostgreSQL entries on this machine's server, one MariaDB
entry, findings, runs and a silence. The admin key drives the main run; a viewer key then runs
every operation again and must be refused (403, documented) wherever an operator or admin is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.auth import Role, create_key
from app.db import Store, migrate
from app.store_partitions import maintain_store_partitions
from tests.app.api.api_roles import api_routes, needing
from tests.conftest import create_database, drop_database

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

DBFLEET = Path(sys.executable).parent / "dbfleet"
PREFIX = "dbf_st18_"
SEED = 18
MAX_EXAMPLES = int(os.environ.get("DBFLEET_ST_EXAMPLES", "25"))  # per operation and phase; the run reports how many cases it sent in all
MIN_CASES = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _seed(store_url: str, targets: list[str]) -> dict[str, str]:
    """Keys per role, and the fleet the fuzzer finds: instances, findings, runs, a silence."""
    await asyncio.to_thread(migrate, store_url)
    store = Store(store_url, pool_size=2)
    try:
        async with store.raw() as conn:
            await maintain_store_partitions(conn, premake_days=2, retention_days=14)
        keys = {}
        async with store.raw() as conn:
            # Far from the ids the fuzzer tries first (1, 2, the int32 bounds): its DELETE /keys/{id}
            # must not revoke the keys the run signs with (revoking one's own key is a 409 anyway).
            await conn.execute("select setval('api_keys_id_seq', 1234567890)")
        async with store.sessions() as session, session.begin():
            for role in Role:
                keys[role.name] = await create_key(session, f"st-{role.name}", role)
    finally:
        await store.dispose()
    conn = await asyncpg.connect(store_url)
    try:
        fleet = [("pg-shop", "postgres", 5432, targets[0]), ("pg-clean", "postgres", 5432, targets[1]),
                 ("maria-app", "mariadb", 3306, "mysql")]
        for name, engine, port, dbname in fleet:
            user = "postgres" if engine == "postgres" else "root"
            server_id = await conn.fetchval(
                "insert into servers (name, engine, host, port, \"user\", tls_mode) values ($1, $2, '127.0.0.1', $3, "
                "$4, 'disable') returning id", name, engine, port, user)
            iid = await conn.fetchval(
                "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags, server_id) "
                "values ($1, $2, '127.0.0.1', $3, $4, $5, 'disable', '{\"env\": \"test\"}', $6) returning id",
                name, engine, port, dbname, user, server_id)
            for n, (check, severity) in enumerate([("unused_index", "warning"), ("fk_without_index", "critical")]):
                await conn.execute(
                    "insert into findings (fingerprint, instance_id, collector, \"check\", object, severity, state, "
                    "title, details, recommendation, first_seen, last_seen, opened_at) values ($1, $2, 'indexes', $3, "
                    "$4, $5, 'open', 't', '{}', '', now(), now(), now())",
                    f"{name}-{n}", iid, check, f"public.t{n}", severity)
            await conn.execute("insert into collector_runs (instance_id, collector, started_at, duration_ms, status, "
                               "findings) values ($1, 'indexes', now(), 12.5, 'ok', 2)", iid)
        await conn.execute("insert into silences (matchers, starts_at, ends_at, created_by, comment) values "
                           "('[\"instance=pg-shop\"]', now(), now() + interval '1 day', 'st', 'seeded')")
    finally:
        await conn.close()
    return keys


class _Receiver(BaseHTTPRequestHandler):
    """A webhook receiver on loopback that takes every notification."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, dict[str, str]]]:
    """A `dbfleet serve` process on a seeded store: (base URL, key per role)."""
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    store_db, targets = f"{PREFIX}store_{tag}", [f"{PREFIX}shop_{tag}", f"{PREFIX}clean_{tag}"]
    store_url = asyncio.run(create_database(store_db))
    for t in targets:
        asyncio.run(create_database(t, "create table t0 (id int primary key); create table t1 (id int)"))
    keys = asyncio.run(_seed(store_url, targets))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    alerting = {"route": {"receiver": "hook"}, "receivers": [
        {"type": "webhook", "name": "hook", "url": f"http://127.0.0.1:{receiver.server_port}/", "timeout_s": 2}]}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBFLEET_")} | {
        "DBFLEET_DATABASE_URL": store_url, "DBFLEET_ALERTING": json.dumps(alerting),
        "DBFLEET_WORKER__CONNECT_TIMEOUT_S": "2"}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{store_db}.log", "w")  # noqa: SIM115 (the server's life)
    proc = subprocess.Popen([str(DBFLEET), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.2)
        yield base, keys
    finally:
        proc.terminate()
        proc.wait(10)
        receiver.shutdown()
        log.close()
        for db in (store_db, *targets):
            asyncio.run(drop_database(db))


# Operations whose schema-valid input can still be refused with 422, and why: rules JSON Schema
# cannot state (the configured credential allow-list, another field's value, a time in the future,
# a regex that compiles, what the store or the monitored database holds). Everything else must
# accept schema-valid input.
SEMANTIC_422 = {
    "POST /api/v1/instances": "credential allow-list; MySQL-only schemas; dbname among schemas",
    "PATCH /api/v1/instances/{name}": "the same rules over the stored fields",
    "POST /api/v1/servers": "credential allow-list; MySQL-only schemas; a dbname listed twice",
    "PATCH /api/v1/servers/{name}": "the same rules over the stored fields",
    "POST /api/v1/instances:import": "the file's own rules, by line and field",
    "GET /api/v1/findings": "a cursor must be one this API returned",
    "POST /api/v1/findings/{finding_id}:silence": "until in the future; a duration over 0 and at most 90d",
    "POST /api/v1/silences": "ends_at in the future and after starts_at; regex matchers compile; "
                             "not every matcher matching an empty label",
    "GET /api/v1/alerts": "regex matchers compile",
    "POST /api/v1/sweeps": "named instances and collectors exist and are enabled; tags select something",
    "GET /api/v1/queries/top": "since before until",
    "GET /api/v1/instances/{name}/queries": "since before until",
    "GET /api/v1/instances/{name}/partitions/plan": "the table is a partitioned table a policy can plan",
    "POST /api/v1/instances/{name}/partitions:apply": "the table is a partitioned table a policy can plan",
    "POST /api/v1/instances/{name}/explain": "the text is one plannable SELECT",
    # issue 17's checks: a kind's own needs (volume, completeness and schema checks name tables),
    # the SQL refusal rules; and `kind` itself, which the document shows as optional (each kind's
    # model has a default) although the discriminated union requires it
    "POST /api/v1/checks": "a kind's needs; SQL refusal rules; kind is required but documented optional",
    "PUT /api/v1/checks/{name}": "the same as POST, and the body's name is the path's",
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]  # schemathesis' default, less its 5xx
# Operations that talk to a monitored database now. The fuzzer registers instances of its own at
# hosts that do not answer, so these may say 502/503/504 (documented, with the reason); no other
# operation may answer 5xx.
MONITORED = ["GET /api/v1/instances/{name}/activity", "GET /api/v1/instances/{name}/locks",
             "POST /api/v1/instances/{name}/explain", "POST /api/v1/instances/{name}/sessions/{pid}:cancel",
             "POST /api/v1/instances/{name}/sessions/{pid}:terminate",
             "GET /api/v1/instances/{name}/partitions/plan", "POST /api/v1/instances/{name}/partitions:apply"]
UNREACHABLE = ["502", "503", "504"]


def _all_labels() -> list[str]:
    return [label for label, _ in api_routes()]


def _operations() -> list[dict]:
    out = []
    for label in sorted(set(SEMANTIC_422) | set(MONITORED)):
        # live views answer 400 for an engine that has none (SQL Server and Oracle entries the fuzzer makes)
        accepted = ACCEPTED + ["422"] * (label in SEMANTIC_422) + [*UNREACHABLE, "400"] * (label in MONITORED)
        checks = {"positive_data_acceptance": {"expected-statuses": accepted}}
        if label in MONITORED:
            checks["not_a_server_error"] = {"expected-statuses": ["2xx", "3xx", "4xx", *UNREACHABLE]}
        out.append({"include-name": label, "checks": checks})
    # DELETE /silences/{id} expires a silence and keeps it for the record, as Alertmanager does:
    # reading it afterwards is a 200 with state "expired", not a 404.
    out.append({"include-name": "GET /api/v1/silences/{silence_id}", "checks": {"use_after_free": {"enabled": False}}})
    # Deleting a server deletes its entries, which the stateful phase would read as an instance it
    # created vanishing; the other phases still call it.
    out.append({"include-name": "DELETE /api/v1/servers/{name}", "phases": {"stateful": {"enabled": False}}})
    return out


@dataclass
class Outcome:
    cases: int = 0
    by_phase: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)  # (operation, status code) seen
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _short_waits(context, case, kwargs) -> None:
    """POST /sweeps with `wait` holds the answer up to wait_s (default 30 s) while no worker runs
    here: cap a valid wait_s at 1 s (still valid) so the run stays short; the rest is as generated."""
    body = case.body
    if case.operation.label == "POST /api/v1/sweeps" and isinstance(body, dict) and body.get("wait") is True:
        wait_s = body.get("wait_s", 30)
        if isinstance(wait_s, (int, float)) and not isinstance(wait_s, bool) and 1 < wait_s <= 30:
            case.body = {**body, "wait_s": 1}


def run_schemathesis(base: str, key: str, *, max_examples: int, phases: dict, include: list[str] | None = None) -> Outcome:
    config = SchemathesisConfig.from_dict({
        "seed": SEED,
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "headers": {"Authorization": f"Bearer {key}"},
        "base-url": base,
        "request-timeout": 20,
        "generation": {"max-examples": max_examples, "mode": "all", "database": "none"},
        "phases": phases,
        "checks": {"enabled": True, "positive_data_acceptance": {"expected-statuses": ACCEPTED}},
        "operations": _operations() + [{"include-name": label, "enabled": False}
                                       for label in _all_labels() if include is not None and label not in include],
    })
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)
    out = Outcome()
    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(_short_waits, "before_call")  # only global ones run
    try:
        _collect(schema, out)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(_short_waits)
    return out


def _collect(schema, out: Outcome) -> None:
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            out.cases += len(event.recorder.cases)
            out.by_phase[event.phase.name] += len(event.recorder.cases)
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    out.statuses[(event.recorder.label, interaction.response.status_code)] += 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        f = check.failure_info.failure
                        out.failures.append(f"{event.recorder.label} [{check.name}] {f.title}: {f.message}"[:600]
                                            + f"\n    {check.failure_info.code_sample}"[:900])
        elif isinstance(event, events.NonFatalError):
            out.errors.append(f"{event.label}: {event.info.format()}"[:800])


def _report(out: Outcome) -> str:
    unique = sorted(set(out.failures))
    text = f"{len(unique)} distinct failures, {len(out.errors)} errors:\n" + "\n".join(unique + out.errors)
    (Path(os.environ.get("TMPDIR", "/tmp")) / "dbf_st18_failures.txt").write_text(text)
    return text[:20_000]


def test_the_api_passes_every_check_with_the_admin_key(served):
    base, keys = served
    started = time.monotonic()
    out = run_schemathesis(base, keys["admin"], max_examples=MAX_EXAMPLES, phases={
        "examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
        "stateful": {"enabled": True, "max-steps": 40}})
    elapsed = time.monotonic() - started
    print(f"schemathesis admin run: {out.cases} cases in {elapsed:.0f} s, by phase {dict(out.by_phase)}")
    assert not out.failures and not out.errors, _report(out)
    assert out.cases >= MIN_CASES and out.by_phase.get("STATEFUL_TESTING", 0) > 0, dict(out.by_phase)


@pytest.mark.parametrize("role, needed, at_least", [(Role.viewer, Role.operator, 20), (Role.operator, Role.admin, 10)])
def test_a_lower_role_is_refused_what_a_higher_one_does(served, role, needed, at_least):
    """Every operation the key's role may not call answers it 403 (documented), with every check on."""
    base, keys = served
    guarded = needing(needed)
    # a key of its own: the admin run's stateful phase may have revoked the seeded ones
    r = httpx.post(f"{base}/api/v1/keys", json={"name": f"st-{role.name}-2", "role": role.name},
                   headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=10)
    assert r.status_code == 201, r.text
    out = run_schemathesis(base, r.json()["key"], max_examples=3, phases={
        "examples": {"enabled": True}, "coverage": {"enabled": False}, "fuzzing": {"enabled": True},
        "stateful": {"enabled": False}}, include=guarded)
    assert not out.failures and not out.errors, _report(out)
    seen = {label: {code for (op, code) in out.statuses if op == label} for label in guarded}
    refused = {label: codes for label, codes in seen.items() if 403 not in codes or any(200 <= c < 300 for c in codes)}
    assert refused == {} and len(guarded) >= at_least, guarded
