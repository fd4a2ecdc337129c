"""SQL Server activity on recorded sys.dm_exec_sessions/requests rows (no server can run here): findings,
the whole lock tree, wait samples; the live operations (SHOWPLAN_XML in its own batch, the confirmed
KILL batch) with every statement they send parsed by sqlglot's tsql dialect."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlglot
from sqlglot import exp

from collectors.common.blocking import lock_trees
from collectors.common.live import NotOnThisEngine, PlanRefused, live_ops
from collectors.engines import sqlserver as adapter
from collectors.sqlserver import activity
from tests.collectors.live_replay import FIXTURES, RecordedConnection, recorded
from tests.collectors.spec_context import spec_context

DATA = recorded("sqlserver", "activity")
SHOWPLAN = (FIXTURES / "sqlserver" / "showplan_orders.xml").read_text()
RAISE = sqlglot.ErrorLevel.RAISE


def ctx(**thresholds):
    return spec_context(activity.SPEC, instance="mssql-prod-1", engine="sqlserver",
                        server_version=DATA["server_version"], thresholds=thresholds,
                        now=datetime.fromisoformat(DATA["now"]))


def test_recorded_sessions_give_exactly_these_findings():
    result = activity.transform(DATA["sessions"], ctx())
    assert {(f.check, f.object) for f in result.findings} == {
        ("idle_in_transaction", "sales:61"),   # asleep 412 s with a transaction open: the root blocker
        ("blocking_chain", "sales:61"),
        ("long_running_query", "sales:72"),    # queued 398 s behind 61
        ("long_running_query", "dw:80"),       # the 25-minute report; 81's hour in WAITFOR is by design
    }
    for f in result.findings:
        assert f.title and f.recommendation and f.details["sql"], f


def test_blocking_chain_carries_the_whole_tree():
    [chain] = [f for f in activity.transform(DATA["sessions"], ctx()).findings if f.check == "blocking_chain"]
    tree = chain.details["tree"]
    assert tree["session_id"] == 61 and tree["open_transactions"] == 1
    assert [n["session_id"] for n in tree["blocked"]] == [72]
    assert [n["session_id"] for n in tree["blocked"][0]["blocked"]] == [73]
    assert chain.details["blocked_sessions"] == 2 and chain.details["longest_wait_s"] == pytest.approx(398.2)
    assert chain.severity.value == "critical" and "KILL 61;" in chain.recommendation


def test_negative_blocking_ids_are_not_blockers():
    """-2 is an orphaned distributed transaction: session 95 waits, but on no session we could show."""
    sessions = [activity.session(r) for r in DATA["sessions"]]
    assert {t["session_id"] for t in lock_trees(sessions)} == {61}
    assert next(s for s in sessions if s["session_id"] == 95)["blocked_by"] == []


@pytest.mark.parametrize("key,value,gone", [("idle_in_transaction_s", 413, "idle_in_transaction"),
                                            ("blocking_chain_s", 399, "blocking_chain"),
                                            ("long_running_query_s", 1501, "long_running_query")])
def test_thresholds_are_read(key, value, gone):
    checks = {f.check for f in activity.transform(DATA["sessions"], ctx(**{key: value})).findings}
    assert gone not in checks


def test_wait_samples_by_query_store_category():
    samples = {s.object: s.value for s in activity.transform(DATA["sessions"], ctx()).samples}
    assert samples == {"Lock:LCK_M_U": 1.0, "Lock:LCK_M_S": 1.0, "Lock:LCK_M_X": 1.0,
                       "Buffer IO:PAGEIOLATCH_SH": 1.0, "CPU:CPU": 1.0}


def test_no_rows_no_findings():
    assert activity.transform([], ctx()).findings == []


def _conn(**extra) -> RecordedConnection:
    return RecordedConnection("sqlserver", DATA["server_version"], [("sys.dm_exec_sessions", DATA["sessions"])],
                              **extra)


async def test_live_sessions_are_the_collectors_sessions():
    ops = live_ops("sqlserver")
    assert ops is not None and ops.dialect == "tsql"
    sessions = await ops.sessions(_conn())
    assert [s["session_id"] for s in sessions] == [61, 72, 73, 80, 81, 90, 95, 99]
    assert sessions[0]["started_at"] == "2026-11-30T08:12:44.317"  # what a kill must send back


async def test_explain_reads_the_showplan_tree():
    asked = []

    async def showplan_xml(text):
        asked.append(text)
        return SHOWPLAN

    text = "SELECT o.order_id FROM dbo.orders AS o WHERE o.note = 'mail me @ home'"
    plan = await live_ops("sqlserver").explain(_conn(showplan_xml=showplan_xml), text, False)
    [stmt] = plan["plan"]
    assert stmt["plan"]["physical_op"] == "Nested Loops"
    assert [c["object"] for c in stmt["plan"]["children"]] == ["dbo.orders.ix_orders_status", "dbo.customers.PK_customers"]
    assert plan["text"].splitlines()[1].strip().startswith("Index Seek on dbo.orders.ix_orders_status")
    assert asked == [text]


@pytest.mark.parametrize("text,analyze,error", [
    ("SELECT * FROM dbo.orders WHERE order_id = @P1", False, PlanRefused),
    ("SELECT * FROM dbo.orders", True, NotOnThisEngine),
])
async def test_explain_refuses_what_it_cannot_plan(text, analyze, error):
    async def showplan_xml(text):
        raise AssertionError("must not reach the server")

    with pytest.raises(error):
        await live_ops("sqlserver").explain(_conn(showplan_xml=showplan_xml), text, analyze)


@pytest.mark.parametrize("text,declarations,statement", [
    ("(@P1 int,@P2 nvarchar(40))SELECT * FROM dbo.orders WHERE id = @P1 AND note = @P2",
     "@P1 int,@P2 nvarchar(40)", "SELECT * FROM dbo.orders WHERE id = @P1 AND note = @P2"),
    ("(@amount decimal(10,2)) SELECT 1 AS one WHERE @amount > 0", "@amount decimal(10,2)",
     "SELECT 1 AS one WHERE @amount > 0"),
    ("SELECT (1) AS one", "", "SELECT (1) AS one"),
])
def test_a_stored_texts_parameter_list_is_split_off(text, declarations, statement):
    assert activity.parameter_list(text) == (declarations, statement)
    assert isinstance(sqlglot.parse_one(live_ops("sqlserver").for_parsing(text), read="tsql", error_level=RAISE),
                      exp.Select)


async def test_a_parameterized_text_is_planned_generically_in_one_batch():
    asked = []

    async def showplan_xml(batch):
        asked.append(batch)
        return SHOWPLAN

    await live_ops("sqlserver").explain(_conn(showplan_xml=showplan_xml),
                                        "(@P1 int)SELECT status FROM dbo.orders WHERE order_id = @P1", False)
    [batch] = asked
    assert batch == "DECLARE @P1 int;\nSELECT status FROM dbo.orders WHERE order_id = @P1"
    kinds = [type(t).__name__ for t in sqlglot.parse(batch, read="tsql", error_level=RAISE)]
    assert kinds == ["Declare", "Select"]


class _Cursor:
    def __init__(self, sent):
        self.sent = sent

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def execute(self, sql, *args):
        self.sent.append(sql)

    async def fetchone(self):
        return (SHOWPLAN,)


class _Raw:
    closed = False

    def __init__(self):
        self.sent = []

    def cursor(self):
        return _Cursor(self.sent)


async def test_showplan_is_its_own_batch_inside_a_rolled_back_transaction():
    raw = _Raw()
    conn = adapter.SqlServerConnection(raw, DATA["server_version"], False, 10)
    assert await conn.showplan_xml("SELECT 1 AS one") == SHOWPLAN
    assert raw.sent == ["BEGIN TRANSACTION", "SET SHOWPLAN_XML ON", "SELECT 1 AS one", "SET SHOWPLAN_XML OFF",
                        "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION"]
    kinds = [type(sqlglot.parse_one(s, read="tsql", error_level=RAISE)).__name__ for s in raw.sent]
    assert kinds == ["Transaction", "Set", "Select", "Set", "IfBlock"]


def test_kill_batch_parses_and_kills_only_inside_the_confirmation():
    batch = activity.KILL_BATCH.format(id=53)
    [nocount, check] = sqlglot.parse(batch, read="tsql", error_level=RAISE)
    assert isinstance(nocount, exp.Set) and isinstance(check, exp.IfBlock)
    confirm = check.this.find(exp.Select)
    assert confirm.find(exp.Table).name == "dm_exec_sessions"
    assert {c.name for c in confirm.find_all(exp.Column)} >= {"session_id", "login_time", "start_time"}
    assert len(list(confirm.find_all(exp.Placeholder))) == 2
    [kill] = list(check.find_all(exp.Kill))
    assert kill.this.name == "53" and kill.parent is check.args["true"]


async def test_kill_sends_the_confirmed_batch(monkeypatch):
    opened: list[RecordedConnection] = []
    answer = [{"killed": 1}]

    async def open_writable(target, limits):
        opened.append(RecordedConnection("sqlserver", DATA["server_version"], [("KILL 61;", answer)]))
        return opened[-1]

    monkeypatch.setattr(adapter, "open_writable", open_writable)
    ops, at = live_ops("sqlserver"), datetime.fromisoformat("2026-11-30T08:12:44.317+00:00")
    assert await ops.kill(None, None, 61, at, True) is True
    [(batch, params)] = opened[0].sent
    assert batch == activity.KILL_BATCH.format(id=61)
    assert params == (at.replace(tzinfo=None),) * 2  # login_time is the server's local wall clock
    answer.clear()  # no session with that id and login_time: the batch sends no result set
    assert await ops.kill(None, None, 61, at, True) is False
    assert all(c.closed for c in opened)
    with pytest.raises(NotOnThisEngine, match="terminate"):
        await ops.kill(None, None, 61, at, False)


def test_sql_is_keyed_from_sql_server_2012_and_runs_once_per_server():
    assert min(activity.SPEC.sql) == activity.SQL_2012 and activity.SPEC.scope.value == "server"
