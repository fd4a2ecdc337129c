"""The live API for SQL Server and Oracle through the same engine-neutral path as PostgreSQL and MySQL.

No SQL Server or Oracle server can run here: the engine's adapter is replaced by one answering with
the recorded rows of tests/collectors/fixtures/<engine>/activity.json. Everything above the driver
(the route, the rate limit, the activity module's sessions, plan and kill, the audit) is the real code.
"""

from __future__ import annotations

import pytest

from app.api import live
from app.settings import Settings
from collectors.common.blocking import tree_members
from collectors.engines import base
from collectors.engines import oracle as oracle_adapter
from collectors.engines import sqlserver as sqlserver_adapter
from tests.collectors.live_replay import FIXTURES, RecordedConnection, recorded

BASE = "/api/v1/instances"
MSSQL, ORA = recorded("sqlserver", "activity"), recorded("oracle", "activity")
SHOWPLAN = (FIXTURES / "sqlserver" / "showplan_orders.xml").read_text()


@pytest.fixture
def settings() -> Settings:
    return Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2},
                    live={"min_interval_s": 0, "allow_terminate": True})


@pytest.fixture
async def engines(client, auth, monkeypatch):
    """live-mssql and live-ora registered, their adapters answering with recorded rows."""
    async def showplan_xml(text):
        return SHOWPLAN

    async def explain_plan(text, statement_id, binds, reads):
        return ORA["explain"]["plan_rows"], ORA["explain"]["xplan"]

    async def mssql(target, limits):
        return RecordedConnection("sqlserver", MSSQL["server_version"], [("sys.dm_exec_sessions", MSSQL["sessions"])],
                                  showplan_xml=showplan_xml)

    async def ora(target, limits):
        return RecordedConnection("oracle", ORA["server_version"], [("FROM v$session", ORA["sessions"])],
                                  explain_plan=explain_plan)

    monkeypatch.setitem(base._ADAPTERS, "sqlserver", mssql)
    monkeypatch.setitem(base._ADAPTERS, "oracle", ora)
    for name, engine, port in (("live-mssql", "sqlserver", 1433), ("live-ora", "oracle", 1521)):
        r = await client.post(BASE, json={"name": name, "engine": engine, "host": "127.0.0.1", "port": port,
                                          "dbname": "sales", "user": "dbfleet"}, headers=auth["admin"])
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("name,root,below", [("live-mssql", 61, [72, 73]), ("live-ora", 141, [152, 163])])
async def test_locks_give_the_whole_tree(client, auth, engines, name, root, below):
    r = await client.get(f"{BASE}/{name}/locks", headers=auth["viewer"])
    assert r.status_code == 200, r.text
    [tree] = r.json()["trees"]
    assert tree["session_id"] == root and [n["session_id"] for n in tree_members(tree)] == below
    activity = await client.get(f"{BASE}/{name}/activity", headers=auth["viewer"])
    assert activity.status_code == 200 and len(activity.json()["sessions"]) >= 7


@pytest.mark.parametrize("name,query,node", [
    ("live-mssql", ("SELECT o.order_id, c.name FROM dbo.orders AS o JOIN dbo.customers AS c "
                    "ON c.id = o.customer_id WHERE o.status = 'open'"), "Nested Loops"),
    ("live-ora", ORA["explain"]["query"], "SELECT STATEMENT"),
])
async def test_explain_gives_a_plan_as_json_and_text(client, auth, engines, clean_store, name, query, node):
    r = await client.post(f"{BASE}/{name}/explain", json={"query": query}, headers=auth["viewer"])
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert (plan[0]["plan"]["physical_op"] if isinstance(plan, list) else plan["operation"]) == node
    assert r.json()["text"]
    async with clean_store.raw() as conn:
        assert await conn.fetchval("select actor from audit_log where action = 'live.explain'") == "test-viewer"


@pytest.mark.parametrize("name,text", [
    ("live-mssql", "(@P1 int)SELECT status FROM dbo.orders WHERE order_id = @P1"),  # as Query Store keeps it
    ("live-ora", "SELECT status FROM orders WHERE order_id = :1"),                  # as V$SQL keeps it
])
async def test_explain_by_queryid_plans_the_stored_text(client, auth, engines, clean_store, name, text):
    async with clean_store.raw() as conn:
        await conn.execute("insert into query_texts (instance_id, query_id, text) select id, 'q7', $1 "
                           "from instances where name = $2", text, name)
    r = await client.post(f"{BASE}/{name}/explain", json={"queryid": "q7"}, headers=auth["viewer"])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("name", ["live-mssql", "live-ora"])
@pytest.mark.parametrize("query", ["UPDATE orders SET status = 'x'", "CREATE TABLE x (a int)",
                                   "SELECT 1 AS one; DROP TABLE orders"])
async def test_explain_refuses_anything_but_one_select(client, auth, engines, name, query):
    r = await client.post(f"{BASE}/{name}/explain", json={"query": query}, headers=auth["viewer"])
    assert r.status_code == 422 and r.json()["detail"].startswith("refused:"), r.text


@pytest.mark.parametrize("name", ["live-mssql", "live-ora"])
async def test_explain_analyze_is_refused_when_off_and_not_offered_when_on(client, auth, engines, settings, name):
    body = {"query": "SELECT 1 AS one FROM orders", "analyze": True}
    off = await client.post(f"{BASE}/{name}/explain", json=body, headers=auth["admin"])
    assert off.status_code == 403 and "allow_analyze" in off.text
    settings.live.allow_analyze = True
    on = await client.post(f"{BASE}/{name}/explain", json=body, headers=auth["admin"])
    assert on.status_code == 400 and "runs the statement" in on.json()["detail"]


async def test_terminate_with_a_stale_start_time_is_refused(client, auth, engines, clean_store, monkeypatch):
    async def mssql_writable(target, limits):
        return RecordedConnection("sqlserver", MSSQL["server_version"], [("KILL 61;", [])])  # no match: no row

    async def ora_writable(target, limits, action="partition apply"):
        return RecordedConnection("oracle", ORA["server_version"], [("FROM v$session", [])])

    monkeypatch.setattr(sqlserver_adapter, "open_writable", mssql_writable)
    monkeypatch.setattr(oracle_adapter, "open_writable", ora_writable)
    stale = {"started_at": "2025-11-30T08:12:44"}
    for name, sid in (("live-mssql", 61), ("live-ora", 141)):
        r = await client.post(f"{BASE}/{name}/sessions/{sid}:terminate", json=stale, headers=auth["operator"])
        assert r.status_code == 409, r.text
    async with clean_store.raw() as conn:
        outcomes = [r["outcome"] for r in await conn.fetch(
            "select outcome from audit_log where action = 'live.terminate' order by id")]
    assert outcomes == ["refused", "refused"]


async def test_cancel_on_sql_server_says_to_terminate(client, auth, engines):
    r = await client.post(f"{BASE}/live-mssql/sessions/61:cancel", json={"started_at": "2026-11-30T08:12:44.317"},
                          headers=auth["operator"])
    assert r.status_code == 400 and ":terminate" in r.json()["detail"]


async def test_live_requests_are_rate_limited_per_instance(client, auth, engines, settings):
    live._last_request.clear()
    settings.live.min_interval_s = 30
    first = await client.get(f"{BASE}/live-ora/activity", headers=auth["viewer"])
    second = await client.get(f"{BASE}/live-ora/locks", headers=auth["viewer"])
    other = await client.get(f"{BASE}/live-mssql/activity", headers=auth["viewer"])
    assert (first.status_code, second.status_code, other.status_code) == (200, 429, 200)
    assert 1 <= int(second.headers["Retry-After"]) <= 30


async def test_a_statement_timeout_is_a_504(client, auth, engines, monkeypatch):
    class QueryTimeout(Exception):  # pyodbc.OperationalError('HYT00', '[HYT00] Query timeout expired')
        pass

    async def slow(target, limits):
        async def fetch(sql, *args):
            raise QueryTimeout("HYT00", "[HYT00] [FreeTDS][SQL Server]Query timeout expired")
        return RecordedConnection("sqlserver", MSSQL["server_version"], [], fetch=fetch)

    monkeypatch.setitem(base._ADAPTERS, "sqlserver", slow)
    r = await client.get(f"{BASE}/live-mssql/activity", headers=auth["viewer"])
    assert r.status_code == 504 and "statement timeout" in r.json()["detail"]


async def test_openapi_documents_what_the_live_routes_answer(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {f"{BASE}/{{name}}/activity": ("get", {"404", "429", "502", "503", "504"}),
                f"{BASE}/{{name}}/locks": ("get", {"404", "429", "502", "503", "504"}),
                f"{BASE}/{{name}}/explain": ("post", {"400", "403", "404", "422", "429", "502", "503", "504"}),
                f"{BASE}/{{name}}/sessions/{{pid}}:cancel": ("post", {"400", "403", "404", "409", "429", "502", "504"}),
                f"{BASE}/{{name}}/sessions/{{pid}}:terminate": ("post", {"400", "403", "404", "409", "429", "502"})}
    for path, (method, codes) in expected.items():
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (path, sorted(responses))
        assert "Retry-After" in responses["429"]["headers"]
        assert "application/problem+json" in responses["429"]["content"]
