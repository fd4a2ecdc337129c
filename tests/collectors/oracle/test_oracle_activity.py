"""Oracle activity on recorded V$SESSION rows (no server can run here): findings, the whole lock tree,
ASH-like wait samples; the live operations (EXPLAIN PLAN + DBMS_XPLAN rolled back, CANCEL SQL / KILL
SESSION by sid,serial# after a logon_time match) with every statement they send parsed by sqlglot."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
import sqlglot
from sqlglot import exp

from collectors.common.live import NotOnThisEngine, PlanRefused, live_ops
from collectors.engines import oracle as adapter
from collectors.oracle import activity
from tests.collectors.live_replay import RecordedConnection, recorded
from tests.collectors.spec_context import spec_context

DATA = recorded("oracle", "activity")
RAISE = sqlglot.ErrorLevel.RAISE
# sqlglot parses EXPLAIN PLAN and ALTER SYSTEM as an opaque Command: their shape is checked here.
SHAPES = [re.compile(r"^EXPLAIN PLAN SET STATEMENT_ID = 'dbfleet_[0-9a-f]{16}' FOR SELECT .+$", re.DOTALL),
          re.compile(r"^ALTER SYSTEM KILL SESSION '\d+,\d+' IMMEDIATE$"),
          re.compile(r"^ALTER SYSTEM CANCEL SQL '\d+,\d+'$")]


def ctx(**thresholds):
    return spec_context(activity.SPEC, instance="ora-prod-1", engine="oracle", server_version=DATA["server_version"],
                        thresholds=thresholds, now=datetime.fromisoformat(DATA["now"]))


def parses(sql: str) -> exp.Expression:
    tree = sqlglot.parse_one(sql, read="oracle", error_level=RAISE)
    if isinstance(tree, exp.Command):
        assert any(shape.match(sql) for shape in SHAPES), sql
    return tree


def test_recorded_sessions_give_exactly_these_findings():
    result = activity.transform(DATA["sessions"], ctx())
    assert {(f.check, f.object) for f in result.findings} == {
        ("idle_in_transaction", "SALESPDB:141,30211"),  # INACTIVE 412 s with a transaction: the root
        ("blocking_chain", "SALESPDB:141"),
        ("long_running_query", "SALESPDB:152,4410"),    # 398 s on enq: TX behind 141
        ("long_running_query", "SALESPDB:170,5123"),    # the ETL report on CPU; 180 sleeps in DBMS_LOCK
    }
    for f in result.findings:
        assert f.title and f.recommendation and f.details["sql"], f


def test_blocking_chain_carries_the_whole_tree_and_kills_by_sid_and_serial():
    [chain] = [f for f in activity.transform(DATA["sessions"], ctx()).findings if f.check == "blocking_chain"]
    tree = chain.details["tree"]
    assert (tree["session_id"], tree["serial"]) == (141, 30211)
    assert [(n["session_id"], n["wait_event"]) for n in tree["blocked"]] == [
        (152, "enq: TX - row lock contention"), (163, "enq: TX - row lock contention")]
    assert chain.details["longest_wait_s"] == pytest.approx(398.2)
    assert "ALTER SYSTEM KILL SESSION '141,30211' IMMEDIATE" in chain.recommendation


def test_recommended_statements_parse():
    for f in activity.transform(DATA["sessions"], ctx()).findings:
        for sql in re.findall(r"(ALTER SYSTEM (?:KILL SESSION|CANCEL SQL) '[^']+'(?: IMMEDIATE)?)", f.recommendation):
            parses(sql)
        for sql in re.findall(r"(SELECT \* FROM TABLE\(DBMS_XPLAN\.DISPLAY_CURSOR\('\w+'\)\))", f.recommendation):
            assert isinstance(parses(sql), exp.Select)


@pytest.mark.parametrize("key,value,gone", [("idle_in_transaction_s", 413, "idle_in_transaction"),
                                            ("blocking_chain_s", 399, "blocking_chain"),
                                            ("long_running_query_s", 1551, "long_running_query")])
def test_thresholds_are_read(key, value, gone):
    assert gone not in {f.check for f in activity.transform(DATA["sessions"], ctx(**{key: value})).findings}


def test_wait_samples_leave_idle_waits_out_and_count_cpu():
    samples = {s.object: s.value for s in activity.transform(DATA["sessions"], ctx()).samples}
    assert samples == {"Application:enq: TX - row lock contention": 2.0, "CPU:CPU": 1.0,
                       "User I/O:db file scattered read": 1.0}


def test_no_rows_no_findings():
    assert activity.transform([], ctx()).findings == []


@pytest.mark.parametrize("version,key", [(112040, 110200), (190300, 120100)])
def test_sessions_sql_by_version(version, key):
    """12c+ names the PDB of each session (the CDB root sees them all)."""
    from collectors.common.versions import closest_lower
    assert closest_lower(activity.SESSIONS_SQL, version) == activity.SESSIONS_SQL[key]
    assert ("v$pdbs" in activity.SESSIONS_SQL[key]) == (key >= 120100)


async def test_live_sessions_are_the_collectors_sessions():
    ops = live_ops("oracle")
    assert ops is not None and ops.dialect == "oracle"
    conn = RecordedConnection("oracle", DATA["server_version"], [("FROM v$session", DATA["sessions"])])
    sessions = await ops.sessions(conn)
    assert [(s["session_id"], s["serial"]) for s in sessions][:2] == [(141, 30211), (152, 4410)]
    assert sessions[0]["started_at"] == "2026-11-30T08:12:44"


async def test_explain_plans_with_binds_as_unknowns():
    calls = []

    async def explain_plan(text, statement_id, binds, reads):
        calls.append((text, statement_id, binds, reads))
        return DATA["explain"]["plan_rows"], DATA["explain"]["xplan"]

    conn = RecordedConnection("oracle", DATA["server_version"], [], explain_plan=explain_plan)
    text = DATA["explain"]["query"] + " AND o.note <> 'at 10:30'"
    plan = await live_ops("oracle").explain(conn, text, False)
    [(sent, statement_id, binds, reads)] = calls
    assert sent == text and binds == {"1": None}  # ':30' inside the literal is not a bind
    assert reads == (activity.PLAN_ROWS_SQL, activity.XPLAN_SQL)
    tree = plan["plan"]
    assert tree["operation"] == "SELECT STATEMENT"
    index = tree["children"][0]["children"][0]["children"][0]["children"][0]
    assert (index["operation"], index["object"]) == ("INDEX RANGE SCAN", "APP.IX_ORDERS_STATUS")
    assert "IX_ORDERS_STATUS" in plan["text"] and plan["text"].startswith("Plan hash value")
    parses(f"EXPLAIN PLAN SET STATEMENT_ID = '{statement_id}' FOR {DATA['explain']['query']}")
    for sql in reads:
        assert isinstance(parses(sql), exp.Select)


async def test_explain_analyze_is_not_offered():
    with pytest.raises(NotOnThisEngine):
        await live_ops("oracle").explain(RecordedConnection("oracle", 190300, []), "SELECT 1 FROM dual", True)


async def test_a_server_refusal_is_a_plan_refusal():
    async def explain_plan(*args):
        raise RuntimeError("ORA-00942: table or view does not exist")

    with pytest.raises(PlanRefused, match="ORA-00942"):
        await live_ops("oracle").explain(RecordedConnection("oracle", 190300, [], explain_plan=explain_plan),
                                         "SELECT * FROM nope", False)


class _Cursor:
    def __init__(self, raw):
        self.raw, self.description, self.rows = raw, None, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    async def execute(self, sql, binds=None):
        self.raw.sent.append((sql, binds))
        if "plan_table_output" in sql:
            self.description, self.rows = [("PLAN_TABLE_OUTPUT",)], [("Plan hash value: 1",)]
        elif "FROM plan_table" in sql:
            self.description, self.rows = [("ID",), ("PARENT_ID",)], [(0, None)]

    async def fetchall(self):
        return self.rows


class _Raw:
    def __init__(self):
        self.sent, self.rolled_back = [], 0

    def cursor(self):
        return _Cursor(self)

    async def rollback(self):
        self.rolled_back += 1


async def test_adapter_explain_plan_reads_then_rolls_back():
    raw = _Raw()
    conn = adapter.OracleConnection(raw, 190300, False)
    rows, lines = await conn.explain_plan("SELECT * FROM orders WHERE id = :1", "dbfleet_0123456789abcdef",
                                          {"1": None}, (activity.PLAN_ROWS_SQL, activity.XPLAN_SQL))
    explain = "EXPLAIN PLAN SET STATEMENT_ID = 'dbfleet_0123456789abcdef' FOR SELECT * FROM orders WHERE id = :1"
    assert raw.sent[0] == (explain, {"1": None})
    assert [b for _, b in raw.sent[1:]] == [["dbfleet_0123456789abcdef"]] * 2
    assert rows == [{"id": 0, "parent_id": None}] and lines == [{"plan_table_output": "Plan hash value: 1"}]
    assert raw.rolled_back == 1


@pytest.mark.parametrize("version,terminate,statement", [
    (190300, True, "ALTER SYSTEM KILL SESSION '152,4410' IMMEDIATE"),
    (190300, False, "ALTER SYSTEM CANCEL SQL '152,4410'"),
    (120201, True, "ALTER SYSTEM KILL SESSION '152,4410' IMMEDIATE"),
])
def test_kill_statements_by_version(version, terminate, statement):
    assert activity.kill_statement(version, 152, 4410, terminate) == statement
    parses(statement)


def test_cancel_before_18c_is_not_on_this_engine():
    with pytest.raises(NotOnThisEngine, match="18c"):
        activity.kill_statement(120201, 152, 4410, False)


@pytest.mark.parametrize("found,fails,killed", [
    ([{"sid": 152, "serial": 4410}], None, True),
    ([], None, False),                                         # logon_time differs: a reused SID
    ([{"sid": 152, "serial": 4410}], "ORA-00030: User session ID does not exist.", False),  # ended meanwhile
])
async def test_kill_confirms_by_logon_time_then_names_sid_and_serial(monkeypatch, found, fails, killed):
    opened = []

    async def execute(sql):
        opened[-1].sent.append((sql, ()))
        if fails:
            raise RuntimeError(fails)

    async def open_writable(target, limits, action="partition apply"):
        opened.append(RecordedConnection("oracle", 190300, [("FROM v$session", found)], execute=execute))
        assert action == "live kill"
        return opened[-1]

    monkeypatch.setattr(adapter, "open_writable", open_writable)
    at = datetime.fromisoformat("2026-12-03T09:41:02+00:00")
    assert await live_ops("oracle").kill(None, None, 152, at, True) is killed
    [conn] = opened
    (match, params), *rest = conn.sent
    assert match == activity.KILL_MATCH_SQL and params == (152, at.replace(tzinfo=None), at.replace(tzinfo=None))
    assert [s for s, _ in rest] == (["ALTER SYSTEM KILL SESSION '152,4410' IMMEDIATE"] if found else [])
    assert conn.closed


def test_stored_texts_with_numbered_binds_are_vetted_as_named_ones():
    text = "SELECT * FROM orders WHERE id = :1 AND note = ':2' AND kind = :\"SYS_B_0\""
    vetted = live_ops("oracle").for_parsing(text)
    assert vetted == "SELECT * FROM orders WHERE id = :b_1 AND note = ':2' AND kind = :b_SYS_B_0"
    assert isinstance(parses(vetted), exp.Select)
