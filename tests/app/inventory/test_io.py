"""Inventory files: YAML and CSV parsing (every error names where and which field), export round trip."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.inventory import io
from app.inventory.store import upsert_instances
from app.models import AuditLog, Instance
from app.settings import CredentialSettings

GOOD_YAML = """\
instances:
  - name: orders-primary
    engine: postgres
    host: db1.internal
    dbname: orders
    user: dbfleet
    credential: env:DBFLEET_CRED_ORDERS_PG
    tls_mode: require
    tags: {env: prod, team: payments}
    overrides:
      health:
        interval_s: 30
        thresholds: {connections_warning_pct: 70}
  - name: reports
    engine: mysql
    host: db2.internal
    port: 3307
    enabled: false
  - name: legacy
    engine: oracle
    host: ora.internal
    credential: file:/var/run/secrets/dbfleet/ora
"""

GOOD_CSV = """\
name,engine,host,port,dbname,user,credential,tls_mode,tags,enabled,overrides
orders-primary,postgres,db1.internal,,orders,dbfleet,env:DBFLEET_CRED_ORDERS_PG,require,env=prod;team=payments,true,"{""health"": {""interval_s"": 30}}"
reports,mysql,db2.internal,3307,,,,,,false,
"""


def test_yaml_parses_all_fields_and_default_ports():
    items = {i.name: i for i in io.parse_yaml(GOOD_YAML)}
    op = items["orders-primary"]
    assert (op.engine, op.host, op.dbname, op.user, op.credential, op.tls_mode) == \
        ("postgres", "db1.internal", "orders", "dbfleet", "env:DBFLEET_CRED_ORDERS_PG", "require")
    assert op.tags == {"env": "prod", "team": "payments"}
    assert op.overrides["health"].interval_s == 30
    assert op.overrides["health"].thresholds == {"connections_warning_pct": 70}
    assert op.resolved_port() == 5432
    assert items["reports"].resolved_port() == 3307 and items["reports"].enabled is False
    assert items["legacy"].resolved_port() == 1521


def test_a_credential_outside_the_allow_list_fails_the_whole_file(tmp_path):
    allowed = CredentialSettings(env_prefixes=["TEAM_A_"], file_dirs=[str(tmp_path)])
    text = one("a", credential="env:TEAM_A_PW") + one("b", credential="env:DBFLEET_CRED_PW") + \
        one("c", credential=f"file:{tmp_path}/pw") + one("d", credential="aws-iam")
    with pytest.raises(io.InventoryFileError) as caught:
        io.parse(text, "yaml", allowed)
    assert caught.value.errors == ["line 5: credential: env: references must name a variable starting with TEAM_A_ "
                                   "(credentials.env_prefixes)"]
    csv_text = f"name,engine,host,credential\nok,postgres,h,env:TEAM_A_PW\nbad,postgres,h,file:{tmp_path}/../x\n"
    with pytest.raises(io.InventoryFileError) as caught:
        io.parse(csv_text, "csv", allowed)
    assert [e.split(": file:")[0] for e in caught.value.errors] == ["row 3: credential"]
    fixed = text.replace("env:DBFLEET_CRED_PW", "env:TEAM_A_OTHER")
    assert [i.credential for i in io.parse(fixed, "yaml", allowed)][:2] == ["env:TEAM_A_PW", "env:TEAM_A_OTHER"]


def test_yaml_accepts_a_bare_list_and_an_empty_file():
    assert [i.name for i in io.parse_yaml("- {name: a, engine: postgres, host: h}\n")] == ["a"]
    assert io.parse_yaml("") == []


def test_csv_parses_tags_enabled_and_overrides():
    items = {i.name: i for i in io.parse_csv(GOOD_CSV)}
    assert items["orders-primary"].tags == {"env": "prod", "team": "payments"}
    assert items["orders-primary"].overrides["health"].interval_s == 30
    assert items["orders-primary"].port is None and items["orders-primary"].resolved_port() == 5432
    assert items["reports"].enabled is False and items["reports"].port == 3307


def one(name: str = "a", **fields) -> str:
    body = {"engine": "postgres", "host": "h", **fields}
    return f"- name: {name}\n" + "".join(f"  {k}: {v}\n" for k, v in body.items())


YAML_ERRORS = [
    ("malformed", "instances:\n  - name: a\n    engine: postgres\n   host: x\n", ["line 4: not valid YAML"]),
    ("tab", "- name: a\n\tengine: x\n", ["line 2: not valid YAML"]),
    ("unknown engine", one(engine="db2"), ["line 1: engine: Input should be 'postgres'"]),
    ("port 0", one(port=0), ["line 1: port: Input should be greater than or equal to 1"]),
    ("port 70000", one(port=70000), ["line 1: port: Input should be less than or equal to 65535"]),
    ("unknown field", one(pasword="x"), ["line 1: pasword: Extra inputs are not permitted"]),
    ("password in credential", one(credential="hunter2"), ["line 1: credential: Value error, must be a reference"]),
    ("env outside the allow-list", one(credential="env:HOME"),
     ["line 1: credential: env: references must name a variable starting with DBFLEET_CRED_"]),
    ("file outside the allow-list", one(credential="file:/etc/shadow"),
     ["line 1: credential: file: references must point inside /var/run/secrets/dbfleet"]),
    ("file escaping with ..", one(credential="file:/var/run/secrets/dbfleet/../../../etc/shadow"),
     ["line 1: credential: file: references must point inside"]),
    ("missing host", "- {name: a, engine: postgres}\n", ["line 1: host: Field required"]),
    ("bad name", one(name="'has space'"), ["line 1: name: Value error, use letters"]),
    ("bad tag key", one(tags="{'bad key': x}"), ["line 1: tags: Value error, tag key 'bad key'"]),
    ("bad tls", one(tls_mode="maybe"), ["line 1: tls_mode: Input should be 'disable'"]),
    ("bad override", one(overrides="{health: {interval_s: 1}}"),
     ["line 1: overrides.health.interval_s: Input should be greater than or equal to 5"]),
    ("unknown override key", one(overrides="{health: {thresholds: {}, colour: red}}"),
     ["line 1: overrides.health.colour: Extra inputs are not permitted"]),
    ("not a mapping", "- just a string\n", ["line 1: expected a mapping of instance fields, got str"]),
    ("not a list", "name: a\n", ["line 1: expected a list of instances"]),
    ("duplicate names", one("a") + one("b") + one("a"), ["line 7: name: duplicate name 'a' (also at line 1)"]),
    # Every problem at once, each at its own item's line.
    ("several", one("a", port=0) + one("b", engine="db2"),
     ["line 1: port: Input should be greater", "line 5: engine: Input should be"]),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in YAML_ERRORS], ids=[c[0] for c in YAML_ERRORS])
def test_yaml_errors_name_the_line_and_field(text: str, expected: list[str]):
    with pytest.raises(io.InventoryFileError) as caught:
        io.parse_yaml(text)
    errors = caught.value.errors
    assert len(errors) == len(expected), errors
    for error, prefix in zip(errors, expected):
        assert error.startswith(prefix), error
    assert str(len(errors)) in str(caught.value)


HEADER = "name,engine,host,port,tags,enabled,overrides\n"
CSV_ERRORS = [
    ("bad tags cell", HEADER + "a,postgres,h,,env=prod;team,,\n",
     ["row 2: tags: 'team' is not key=value (use k=v;k=v)"]),
    ("unknown column", "name,engine,host,colour\na,postgres,h,red\n", ["row 1: unknown column(s) colour"]),
    ("no header", "", ["row 1: header must include"]),
    ("unknown engine", HEADER + "a,db2,h,,,,\n", ["row 2: engine: Input should be 'postgres'"]),
    ("port 0 and 70000", HEADER + "a,postgres,h,0,,,\nb,postgres,h,70000,,,\nc,postgres,h,abc,,,\n",
     ["row 2: port: Input should be greater than or equal to 1",
      "row 3: port: Input should be less than or equal to 65535",
      "row 4: port: Input should be a valid integer"]),
    ("enabled", HEADER + "a,postgres,h,,,maybe,\n", ["row 2: enabled: 'maybe' is not true/false"]),
    ("overrides", HEADER + "a,postgres,h,,,,{bad\n", ["row 2: overrides: not valid JSON"]),
    ("too many cells", "name,engine,host\na,postgres,h,surplus\n", ["row 2: more fields than the header"]),
    ("duplicate names", "name,engine,host\na,postgres,h\nb,postgres,h\na,postgres,h\n",
     ["row 4: name: duplicate name 'a' (also at row 2)"]),
    ("mixed", HEADER + "a,postgres,h,,bad,,\nb,db2,h,,,,\n",
     ["row 2: tags: 'bad' is not key=value", "row 3: engine: Input should be"]),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CSV_ERRORS], ids=[c[0] for c in CSV_ERRORS])
def test_csv_errors_name_the_row_and_field(text: str, expected: list[str]):
    with pytest.raises(io.InventoryFileError) as caught:
        io.parse_csv(text)
    errors = caught.value.errors
    assert len(errors) == len(expected), errors
    for error, prefix in zip(errors, expected):
        assert error.startswith(prefix), error


@pytest.mark.parametrize("filename, content_type, fmt", [
    ("fleet.csv", "", "csv"), ("fleet.yaml", "", "yaml"), ("fleet.yml", "", "yaml"), ("", "text/csv", "csv"),
    ("", "application/yaml", "yaml"), ("", "", "yaml"),
])
def test_format_for(filename: str, content_type: str, fmt: str):
    assert io.format_for(filename, content_type) == fmt


def test_unknown_format_is_refused():
    with pytest.raises(io.InventoryFileError, match="unknown format 'json'"):
        io.parse("[]", "json")


async def _import(store, text: str, fmt: str):
    async with store.sessions() as session, session.begin():
        return await upsert_instances(session, io.parse(text, fmt), actor="test")


async def _instances(store) -> list[Instance]:
    async with store.sessions() as session:
        return list((await session.execute(select(Instance).order_by(Instance.name))).scalars())


@pytest.mark.parametrize("fmt, text", [("yaml", GOOD_YAML), ("csv", GOOD_CSV)])
async def test_import_export_round_trip_is_idempotent(clean_store, fmt: str, text: str):
    first = await _import(clean_store, text, fmt)
    assert first.updated == first.unchanged == [] and len(first.created) >= 2
    for out_fmt in ("yaml", "csv"):
        insts = await _instances(clean_store)
        exported = io.dump_yaml(insts) if out_fmt == "yaml" else io.dump_csv(insts)
        again = await _import(clean_store, exported, out_fmt)
        assert (again.created, again.updated) == ([], []), exported
        assert sorted(again.unchanged) == sorted(first.created)
    # The same file once more: all unchanged, and only the creations were audited.
    assert sorted((await _import(clean_store, text, fmt)).unchanged) == sorted(first.created)
    async with clean_store.sessions() as session:
        audits = list((await session.execute(select(AuditLog))).scalars())
    assert sorted(a.target for a in audits) == sorted(first.created)


async def test_export_carries_references_only(clean_store):
    await _import(clean_store, GOOD_YAML, "yaml")
    insts = await _instances(clean_store)
    text = io.dump_yaml(insts)
    assert "credential: env:DBFLEET_CRED_ORDERS_PG" in text and "file:/var/run/secrets/dbfleet/ora" in text
    csv_text = io.dump_csv(insts)
    assert csv_text.splitlines()[0] == ",".join(io.CSV_COLUMNS)
    assert "env=prod;team=payments" in csv_text


async def test_reimport_with_a_change_updates_pins_and_audits(clean_store):
    await _import(clean_store, GOOD_YAML, "yaml")
    changed = GOOD_YAML.replace("host: db2.internal", "host: db2-new.internal")
    report = await _import(clean_store, changed, "yaml")
    assert (report.created, report.updated) == ([], ["reports"])
    inst = {i.name: i for i in await _instances(clean_store)}["reports"]
    assert inst.host == "db2-new.internal" and inst.pinned == {"host": True}
    async with clean_store.sessions() as session:
        audit = (await session.execute(select(AuditLog).where(AuditLog.target == "reports")
                                       .order_by(AuditLog.id.desc()))).scalars().first()
    assert audit.details == {"changed": {"host": "db2-new.internal"}} and audit.actor == "test"


def test_csv_saved_by_a_spreadsheet_with_bom_and_crlf():
    items = io.parse_csv("\ufeffname,engine,host,tags\r\na,postgres,h,env=prod\r\n")
    assert [(i.name, i.tags) for i in items] == [("a", {"env": "prod"})]


# --- The servers form: a server and the databases (MySQL: schemas) monitored on it -------------

SERVERS_YAML = """\
servers:
  - name: pg-main
    engine: postgres
    host: db1.internal
    user: dbfleet
    credential: env:DBFLEET_CRED_PG
    tags: {env: prod}
    databases:
      - shop
      - {dbname: clean, tags: {team: data}, overrides: {index_advice: {enabled: false}}}
  - name: maria
    engine: mariadb
    host: db2.internal
    databases:
      - shop
      - {name: maria-reports, schemas: [reports, reports_archive]}
  - name: pg-analytics
    engine: postgres
    host: db3.internal
    databases: {include: ["dbf_*", "app_*"], exclude: ["*_tmp"]}
  - name: pg-plain
    engine: postgres
    host: db4.internal
instances:
  - {name: legacy, engine: oracle, host: ora.internal}
"""


def test_servers_yaml_expands_each_server_into_its_entries():
    inv = io.parse_inventory(SERVERS_YAML, "yaml")
    servers = {s.name: s for s in inv.servers}
    assert [i.name for i in inv.instances] == ["legacy"]
    pg = servers["pg-main"]
    assert [(e.dbname, e.name, e.tags) for e in pg.entries()] == [("shop", None, {}), ("clean", None, {"team": "data"})]
    assert (pg.resolved_port(), pg.credential, pg.patterns()) == (5432, "env:DBFLEET_CRED_PG", None)
    # MySQL: a database is a schema, and one entry may group several.
    maria = servers["maria"].entries()
    assert [(e.name, e.dbname, e.schemas) for e in maria] == [(None, "shop", []),
                                                              ("maria-reports", "reports", ["reports", "reports_archive"])]
    assert servers["pg-analytics"].patterns() == {"include": ["dbf_*", "app_*"], "exclude": ["*_tmp"]}
    assert servers["pg-analytics"].entries() == []
    # No databases said: one entry, the server's default database, named as the server.
    assert [(e.name, e.dbname) for e in servers["pg-plain"].entries()] == [("pg-plain", "postgres")]
    assert inv.where == {"pg-main": "line 2", "maria": "line 11", "pg-analytics": "line 17", "pg-plain": "line 21"}


def server(name: str = "s", **fields) -> str:
    body = {"engine": "postgres", "host": "h", **fields}
    return f"  - name: {name}\n" + "".join(f"    {k}: {v}\n" for k, v in body.items())


SERVER_ERRORS = [
    ("unknown field", server(colour="red"), ["line 2: colour: Extra inputs are not permitted"]),
    ("schemas on PostgreSQL", server(databases="[{dbname: a, schemas: [a, b]}]"),
     ["line 2: databases: Value error, schemas: only MySQL/MariaDB entries group schemas"]),
    ("entry without a database", server(engine="mysql", databases="[a, {tags: {x: y}}]"),
     ["line 2: databases.1: Value error, dbname (or schemas, or the entry's name) is required"]),
    ("a database twice", server(databases="[a, b, a]"),
     ["line 2: databases: Value error, dbname 'a' is listed twice (databases.0 and databases.2)"]),
    ("dbname not among its schemas", server(engine="mariadb", databases="[{dbname: a, schemas: [b, c]}]"),
     ["line 2: databases.0: Value error, must include dbname 'a'"]),
    ("empty include", server(databases="{include: []}"), ["line 2: databases.include: List should have at least 1"]),
    ("unknown pattern key", server(databases="{inclde: ['*']}"), ["line 2: databases.inclde: Extra inputs"]),
    ("bad entry name", server(databases="[{dbname: a, name: 'has space'}]"), ["line 2: databases.0.name: Value error"]),
    ("credential outside the allow-list", server(credential="env:HOME"),
     ["line 2: credential: env: references must name a variable starting with DBFLEET_CRED_"]),
    ("duplicate server", server("s") + server("s"), ["line 5: name: duplicate name 's' (also at line 2)"]),
    ("entry name taken by an instance", server("s", databases="[shop]") + "instances:\n  - {name: s.shop, engine: postgres, host: x}\n",
     ["line 2: databases.0: entry name 's.shop' is also at line 7"]),
    ("two servers' entries", server("a", databases="[{dbname: x, name: same}]") + server("b", databases="[{dbname: y, name: same}]"),
     ["line 6: databases.0: entry name 'same' is also at line 2"]),
    ("servers not a list", None, ["line 1: servers: expected a list of servers"]),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in SERVER_ERRORS], ids=[c[0] for c in SERVER_ERRORS])
def test_server_errors_name_the_line_and_field(text: str | None, expected: list[str]):
    text = "servers:\n" + text if text is not None else "servers: {name: s}\n"
    with pytest.raises(io.InventoryFileError) as caught:
        io.parse_inventory(text, "yaml")
    errors = caught.value.errors
    assert len(errors) == len(expected), errors
    for error, prefix in zip(errors, expected):
        assert error.startswith(prefix), error


def test_a_servers_file_is_not_read_as_instances_alone():
    with pytest.raises(io.InventoryFileError, match="line 2: servers: read this file with parse_inventory"):
        io.parse_yaml(SERVERS_YAML)


async def _import_inventory(store, text: str, fmt: str = "yaml"):
    from app.inventory.store import upsert_inventory

    async with store.sessions() as session, session.begin():
        return await upsert_inventory(session, io.parse_inventory(text, fmt), actor="test")


async def _servers(store) -> dict[str, dict]:
    async with store.raw() as conn:
        rows = await conn.fetch("select s.*, coalesce(array_agg(i.name order by i.name) filter (where i.id is not null), "
                                "'{}') as entries from servers s left join instances i on i.server_id = s.id group by s.id")
    return {r["name"]: dict(r) for r in rows}


async def test_servers_import_makes_one_server_with_its_entries_and_round_trips(clean_store):
    first = await _import_inventory(clean_store, SERVERS_YAML)
    assert sorted(first.servers.created) == ["maria", "pg-analytics", "pg-main", "pg-plain"]
    assert sorted(first.created) == ["legacy", "maria-reports", "maria.shop", "pg-main.clean", "pg-main.shop", "pg-plain"]
    servers = await _servers(clean_store)
    assert servers["pg-main"]["entries"] == ["pg-main.clean", "pg-main.shop"]
    assert servers["maria"]["entries"] == ["maria-reports", "maria.shop"]
    assert servers["pg-analytics"]["entries"] == [] and servers["pg-analytics"]["databases"] == \
        {"include": ["dbf_*", "app_*"], "exclude": ["*_tmp"]}
    # The instance listed on its own got the server at its endpoint, made by the store.
    assert servers["ora.internal:1521"]["entries"] == ["legacy"]
    insts = {i.name: i for i in await _instances(clean_store)}
    clean = insts["pg-main.clean"]
    assert (clean.host, clean.port, clean.user, clean.credential, clean.dbname) == \
        ("db1.internal", 5432, "dbfleet", "env:DBFLEET_CRED_PG", "clean")
    assert clean.tags == {"env": "prod", "team": "data"} and clean.overrides == {"index_advice": {"enabled": False}}
    assert (insts["maria-reports"].dbname, insts["maria-reports"].schemas) == ("reports", ["reports", "reports_archive"])

    again = await _import_inventory(clean_store, SERVERS_YAML)
    assert (again.created, again.updated, again.servers.created, again.servers.updated) == ([], [], [], [])
    async with clean_store.sessions() as session:
        from app.models import Server
        exported = io.dump_yaml(await _instances(clean_store),
                                (await session.execute(select(Server).order_by(Server.name))).scalars())
    back = await _import_inventory(clean_store, exported)
    assert (back.created, back.updated, back.servers.created, back.servers.updated) == ([], [], [], []), exported
    assert sorted(back.unchanged) == sorted(first.created)
    assert "- shop\n" in exported and "credential: env:DBFLEET_CRED_PG" in exported


async def test_a_declared_server_takes_over_the_one_made_for_its_endpoint_and_keeps_its_entries(clean_store):
    """An inventory from before servers: the declared server is the same row, its databases the
    same instances (their findings history stays)."""
    await _import(clean_store, "- {name: shop-db, engine: mariadb, host: DB2.internal, dbname: shop}\n", "yaml")
    before = {i.name: i.id for i in await _instances(clean_store)}
    report = await _import_inventory(clean_store, SERVERS_YAML)
    servers = await _servers(clean_store)
    assert "maria" in report.servers.updated and "DB2.internal:3306" not in servers
    assert servers["maria"]["entries"] == ["maria-reports", "shop-db"]
    assert {i.name: i.id for i in await _instances(clean_store)}["shop-db"] == before["shop-db"]
    assert "maria.shop" not in report.created
