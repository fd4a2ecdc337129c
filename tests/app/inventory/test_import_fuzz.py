"""Inventory files fuzzed with hypothesis: every bad file is refused whole, naming line and field.

Two kinds of input: files that are well formed but wrong in one field of one entry (the error
must name that entry's line and that field), and garbage (random bytes, a good file with bytes
flipped, cut or inserted, other encodings, BOMs). Parsing is checked in process; the
`dbfleet inventory import` command is checked against a real store database (dbf_fz18_*),
comparing every inventory and audit row before and after each refused file.

DBFLEET_FUZZ_EXAMPLES scales the example counts (default 200 for parsing, 40 through the store).
"""

from __future__ import annotations

import asyncio
import csv
import io as stdio
import json
import os
import re
from dataclasses import dataclass

import asyncpg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from app.cli import cli
from app.db import migrate
from app.inventory import io
from app.settings import CredentialSettings, get_settings
from tests.conftest import create_database, drop_database

EXAMPLES = int(os.environ.get("DBFLEET_FUZZ_EXAMPLES", "200"))
STORE_EXAMPLES = max(10, EXAMPLES // 5)
ALLOWED = CredentialSettings(env_prefixes=["DBFLEET_CRED_"], file_dirs=["/var/run/secrets/dbfleet"])
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Where an error says it is: YAML "line N", CSV "row N" or "row N (line L)".
WHERE = re.compile(r"^(line \d+|row \d+(?: \(line \d+\))?): \S")
PASSWORD = "Hunter2-fz18-pasted-password"


class Raw(str):
    """A YAML token written as is (.nan, a date, a 5000-digit number), not as a JSON string."""


ENGINES = ["postgres", "aurora-postgres", "mysql", "mariadb", "aurora-mysql", "sqlserver", "oracle"]
word = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
tag_values = st.from_regex(r"[A-Za-z0-9 _.:/=-]{0,20}", fullmatch=True).map(str.strip)
credentials = st.sampled_from([None, "env:DBFLEET_CRED_PG", "aws-iam", "aws-sm:prod/db#password",
                               "file:/var/run/secrets/dbfleet/pg"])
overrides = st.one_of(st.just({}), st.fixed_dictionaries({"health": st.fixed_dictionaries(
    {}, optional={"enabled": st.booleans(), "interval_s": st.integers(5, 86400),
                  "thresholds": st.dictionaries(word, st.integers(-1000, 10**6) | st.floats(0, 100), max_size=2)})}))


@st.composite
def instance_entry(draw, n: int) -> dict:
    entry = {"name": f"fz-{n}-{draw(word)}", "engine": draw(st.sampled_from(ENGINES)),
             "host": draw(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True))}
    optional = {"port": st.integers(1, 65535), "dbname": word, "user": word, "credential": credentials,
                "tls_mode": st.sampled_from(["disable", "prefer", "require", "verify-full"]),
                "tags": st.dictionaries(word, tag_values, max_size=3), "enabled": st.booleans(),
                "overrides": overrides}
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=len(optional))):
        value = draw(optional[key])
        if value is not None:
            entry[key] = value
    return entry


@st.composite
def server_entry(draw, n: int) -> dict:
    entry = draw(instance_entry(n))
    for key in ("dbname", "overrides"):
        entry.pop(key, None)
    entry["name"] = f"srv-{n}-{draw(word)}"
    if draw(st.booleans()):
        entry["databases"] = draw(st.lists(word, min_size=1, max_size=3, unique=True))
    return entry


def _make_wrong(entries: list[dict], i: int, field: str, value):
    """Entry i gets the wrong value; None for a name means an earlier entry's (reported on entry i)."""
    if field == "name" and value is None:
        assume(i > 0)
        value = entries[i - 1]["name"]
    entries[i][field] = value
    if field == "schemas":
        entries[i]["engine"] = "postgres"  # schemas are only wrong on an engine that has no schema sets
    return value


# One wrong field: (field, the value YAML gets). `None` for the value: the duplicate name.
YAML_WRONG = [
    ("port", 0), ("port", 70000), ("port", -1), ("port", "fifty"), ("port", 1.5), ("port", [5432]),
    ("port", Raw("9" * 5000)), ("port", 2 ** 70),
    ("engine", "db2"), ("engine", ""), ("engine", 5), ("engine", "Postgres "),
    ("name", None), ("name", ""), ("name", "-leading-dash"), ("name", "a" * 201), ("name", "with space"),
    ("name", "nul\x00name"), ("name", 42),
    ("host", ""), ("host", "h" * 256), ("host", "db\x00.example"), ("host", None), ("host", "db\n.example"),
    ("dbname", "d" * 201), ("dbname", "sh\x00op"), ("dbname", Raw('"\\ud800"')), ("dbname", ["shop"]),
    ("user", "u" * 201), ("user", "dba\x00"), ("user", {"name": "dba"}),
    ("tags", {"1bad": "x"}), ("tags", {"team": "a;b"}), ("tags", {"team": 5}), ("tags", ["team=db"]),
    ("tags", {"team": "v" * 501}), ("tags", {"team": "a\x00b"}), ("tags", {"k" * 101: "x"}),
    ("tags", {"team": Raw('"\\udfff"')}), ("tags", "team=db"),
    ("credential", PASSWORD), ("credential", "env:OTHER_VAR"), ("credential", "file:/etc/shadow"),
    ("credential", "file:/var/run/secrets/dbfleet/\x00x"), ("credential", "file:/" + "c" * 500), ("credential", 7),
    ("credential", "file:/var/run/secrets/dbfleet/../../../etc/passwd"),
    ("enabled", "maybe"), ("enabled", 3), ("tls_mode", "sometimes"),
    ("overrides", {"health": {"interval_s": 1}}), ("overrides", {"health": {"interval_s": 10 ** 12}}),
    ("overrides", {"health": {"bogus": 1}}), ("overrides", "notamap"),
    ("overrides", {"health": {"thresholds": {"x": Raw(".nan")}}}),
    ("overrides", {"health": {"thresholds": {"x": Raw("-.inf")}}}),
    ("overrides", {"health": {"thresholds": {"since": Raw("2024-01-01")}}}),
    ("overrides", {"health": {"thresholds": {"blob": Raw("!!binary aGVsbG8=")}}}),
    ("overrides", {"health": {"thresholds": {"big": 10 ** 20}}}),
    ("overrides", {"health": {"thresholds": {"text": "a\x00"}}}),
    ("schemas", ["a", "a"]), ("colour", "red"),
]
SERVER_ONLY = [("databases", [{"dbname": "d" * 201}]), ("databases", {"include": []}),
               ("databases", ["shop", "shop"]), ("databases", {"include": ["x\x00"]}), ("databases", 5)]
# The same for CSV: every cell is text.
CSV_WRONG = [
    ("port", "0"), ("port", "70000"), ("port", "fifty"), ("port", "9" * 5000), ("port", "1e3"),
    ("engine", "db2"), ("name", None), ("name", "-x"), ("name", "a" * 201), ("name", "a b"), ("name", "n\x00"),
    ("host", "h" * 256), ("host", "h\x00"), ("host", "\t"), ("dbname", "d" * 201), ("dbname", "d\x00"),
    ("user", "u" * 201), ("tags", "1bad=x"), ("tags", "team=a\x00"), ("tags", "novalue"),
    ("tags", "team=" + "v" * 501), ("enabled", "maybe"), ("credential", PASSWORD), ("credential", "env:OTHER"),
    ("credential", "file:/a\x00b"), ("credential", "file:/etc/shadow"), ("tls_mode", "sometimes"),
    ("overrides", "{bad"), ("overrides", '{"health": {"interval_s": 1}}'), ("overrides", "[1]"),
    ("overrides", '{"health": {"thresholds": {"x": NaN}}}'), ("overrides", '{"health": {"thresholds": {"x": "\\u0000"}}}'),
    ("overrides", '{"health": {"thresholds": {"x": ' + "9" * 30 + "}}}"), ("overrides", "\"\\ud800\""),
    ("schemas", "a;a"), ("host", "h" * 200_000),
]


def _yaml_value(v) -> str:
    return str(v) if isinstance(v, Raw) else json.dumps(v)


def _yaml_mapping(d: dict) -> str:
    """JSON is YAML: a flow mapping whose Raw values are written bare."""
    parts = [f"{json.dumps(k)}: {_yaml_mapping(v) if isinstance(v, dict) else _yaml_value(v)}" for k, v in d.items()]
    return "{" + ", ".join(parts) + "}"


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # each entry's first and last line (YAML) or its where prefix (CSV: start, start)


def render_yaml(sections: dict[str, list[dict]], block: bool, bare: bool) -> Rendered:
    lines, spans = [], []
    for key, entries in sections.items():
        if not bare:
            lines.append(f"{key}:")
        for entry in entries:
            start = len(lines) + 1
            if not block or not entry:
                lines.append(f"  - {_yaml_mapping(entry)}")
            else:
                for j, (k, v) in enumerate(entry.items()):
                    value = _yaml_mapping(v) if isinstance(v, dict) else _yaml_value(v)
                    lines.append(f"  {'- ' if j == 0 else '  '}{json.dumps(k)}: {value}")
            spans.append((start, len(lines)))
    return Rendered("\n".join(lines) + "\n", spans)


def render_csv(entries: list[dict], pretty_overrides: bool) -> tuple[str, list[str]]:
    """The file and each row's where prefix, counted the way a DBA's editor shows lines."""
    buf = stdio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(io.CSV_COLUMNS)
    wheres, line = [], 2
    for n, entry in enumerate(entries, start=2):
        cells = dict(entry)
        if isinstance(cells.get("tags"), dict):
            cells["tags"] = ";".join(f"{k}={v}" for k, v in cells["tags"].items())
        if isinstance(cells.get("overrides"), dict):
            cells["overrides"] = json.dumps(cells["overrides"], indent=1 if pretty_overrides else None) \
                if cells["overrides"] else ""
        if isinstance(cells.get("enabled"), bool):
            cells["enabled"] = str(cells["enabled"]).lower()
        before = buf.tell()
        writer.writerow([cells.get(c, "") if cells.get(c) is not None else "" for c in io.CSV_COLUMNS])
        wheres.append(f"row {n}" if line == n else f"row {n} (line {line})")
        line += buf.getvalue()[before:].count("\n")
    return buf.getvalue(), wheres


@st.composite
def wrong_yaml(draw) -> tuple[str, tuple[int, int], str, str]:
    """(file, the wrong entry's lines, the wrong field, the bad value's text) for a YAML file."""
    with_servers = draw(st.booleans())
    instances = [draw(instance_entry(n)) for n in range(draw(st.integers(1 if not with_servers else 0, 4)))]
    servers = [draw(server_entry(n)) for n in range(draw(st.integers(1, 3)))] if with_servers else []
    pool = [("instances", i) for i in range(len(instances))] + [("servers", i) for i in range(len(servers))]
    section, i = draw(st.sampled_from(pool))
    entries = instances if section == "instances" else servers
    wrong = YAML_WRONG + (SERVER_ONLY if section == "servers" else [])
    field, value = draw(st.sampled_from(wrong))
    if section == "servers" and field in ("dbname", "overrides", "schemas"):
        field = "colour"  # a server item has no such key: refused as an extra key all the same
    value = _make_wrong(entries, i, field, value)
    bare = not servers and draw(st.booleans())
    sections = {"instances": instances, "servers": servers} if servers else {"instances": instances}
    if not instances:
        del sections["instances"]
    rendered = render_yaml(sections, block=draw(st.booleans()), bare=bare)
    index = (0 if section == "instances" or not instances else len(instances)) + i
    return rendered.text, rendered.spans[index], field, str(value)


@st.composite
def wrong_csv(draw) -> tuple[str, str, str, str]:
    """(file, the wrong row's where prefix, the wrong field, the bad value) for a CSV file."""
    entries = [draw(instance_entry(n)) for n in range(draw(st.integers(1, 5)))]
    i = draw(st.integers(0, len(entries) - 1))
    field, value = draw(st.sampled_from(CSV_WRONG))
    value = _make_wrong(entries, i, field, value)
    text, wheres = render_csv(entries, pretty_overrides=draw(st.booleans()))
    return text, wheres[i], field, value


def _names_line_and_field(errors: list[str], span: tuple[int, int], field: str) -> bool:
    for error in errors:
        m = re.match(r"line (\d+): (?:(?:instances\.|servers\.)?\d+\.)?([A-Za-z_]+)", error)
        if m and span[0] <= int(m.group(1)) <= span[1] and m.group(2) == field:
            return True
    return False


def _refusal(text: str | bytes, fmt: str) -> list[str]:
    """The errors a refused file gets; fails if the file is accepted or anything else is raised."""
    with pytest.raises(io.InventoryFileError) as caught:
        io.parse_inventory(io.read_text(text) if isinstance(text, bytes) else text, fmt, ALLOWED)
    errors = caught.value.errors
    assert errors and all(WHERE.match(e) for e in errors), errors
    return errors


@FUZZ
@given(wrong_yaml())
def test_a_yaml_file_wrong_in_one_field_is_refused_naming_the_entry_line_and_field(case):
    text, span, field, _ = case
    errors = _refusal(text, "yaml")
    assert _names_line_and_field(errors, span, field), (errors, span, field)
    assert PASSWORD not in "\n".join(errors), "a pasted password is never echoed back"


@FUZZ
@given(wrong_csv())
def test_a_csv_file_wrong_in_one_cell_is_refused_naming_the_row_and_field(case):
    text, where, field, _ = case
    errors = _refusal(text, "csv")
    assert any(e.startswith(f"{where}: {field}") for e in errors), (errors, where, field)
    assert PASSWORD not in "\n".join(errors)


@st.composite
def valid_file(draw) -> tuple[str, str, int]:
    """(file, format, entries it declares) for a good YAML or CSV file."""
    fmt = draw(st.sampled_from(["yaml", "csv"]))
    instances = [draw(instance_entry(n)) for n in range(draw(st.integers(1, 5)))]
    if fmt == "csv":
        return render_csv(instances, pretty_overrides=draw(st.booleans()))[0], fmt, len(instances)
    servers = [draw(server_entry(n)) for n in range(draw(st.integers(0, 2)))]
    sections = {"instances": instances, **({"servers": servers} if servers else {})}
    text = render_yaml(sections, block=draw(st.booleans()), bare=not servers and draw(st.booleans())).text
    return text, fmt, len(instances) + sum(len(s.get("databases", [1])) for s in servers)


@FUZZ
@given(valid_file())
def test_the_generated_good_files_are_accepted(case):
    """The baseline the wrong files are made from is itself valid, so each refusal is the wrong field's."""
    text, fmt, count = case
    inventory = io.parse_inventory(text, fmt, ALLOWED)
    assert len(inventory.instances) + sum(len(s.entries()) for s in inventory.servers) == count


def _mangle(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    for op, at, junk in ops:
        at = at % (len(data) + 1)
        if op == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ (junk[0] if junk else 0x80)]) + data[at + 1:]
        elif op == "cut":
            data = data[:at] + data[at + len(junk) + 1:]
        elif op == "insert":
            data = data[:at] + junk + data[at:]
        elif op == "truncate":
            data = data[:at]
    return data


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"]


@st.composite
def garbage(draw) -> tuple[bytes, str]:
    """Random bytes, or a good file mangled, re-encoded or given a BOM: (bytes, format)."""
    fmt = draw(st.sampled_from(["yaml", "csv"]))
    kind = draw(st.sampled_from(["bytes", "mangled", "encoded", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000)), fmt
    if kind == "text":
        return draw(st.text(max_size=2000)).encode("utf-8", "surrogatepass"), fmt
    text, fmt, _ = draw(valid_file())
    if kind == "encoded":
        # A non-ASCII tag value makes latin-1 and cp1252 files undecodable as UTF-8.
        text = text.replace("fz-0-", "fz-0-") + ("" if fmt == "csv" else "# café ✓\n")
        encoding = draw(st.sampled_from(ENCODINGS))
        return text.encode(encoding, "replace"), fmt
    ops = draw(st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "truncate"]), st.integers(0, 10**6),
                                  st.binary(max_size=12)), min_size=1, max_size=4))
    return _mangle(text.encode(), ops), fmt


@FUZZ
@given(garbage())
def test_garbage_is_refused_with_a_line_or_parsed_never_a_crash(case):
    data, fmt = case
    try:
        io.parse_inventory(io.read_text(data), fmt, ALLOWED)
    except io.InventoryFileError as e:
        assert e.errors and all(WHERE.match(x) for x in e.errors), e.errors


ENCODED_GOOD = "instances:\n  - {name: caf-1, engine: postgres, host: h, tags: {owner: 'José ✓'}}\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
def test_a_good_file_in_any_unicode_encoding_with_its_bom_is_read(encoding):
    inventory = io.parse_inventory(io.read_text(ENCODED_GOOD.encode(encoding)), "yaml", ALLOWED)
    assert inventory.instances[0].tags == {"owner": "José ✓"}


@pytest.mark.parametrize(("data", "expected"), [
    (ENCODED_GOOD.encode("latin-1", "replace"), "line 2: not UTF-8 text"),
    (b"instances:\n  - {name: a, engine: postgres, host: h}\n\x00\x00", "line 3: not valid YAML: special characters"),
    (b"instances:\n  - name: a\n    name: b\n    engine: postgres\n    host: h\n",
     "line 3: instances.0.name: given twice (also at line 2)"),
    (b"instances: []\ninstances:\n  - {name: a, engine: postgres, host: h}\n", "line 2: instances: given twice"),
    (b"instances: []\nservrs: []\n", "line 2: servrs: unknown key"),
    (b"a: &a [1,1,1,1,1,1,1,1,1,1]\n" + b"".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n".encode() for p, c in zip("abcde", "bcdef")),
     "the file expands to more than"),
    (b"instances: &x [*x]\n", "line 1: an alias refers to the value that holds it"),
    (b"instances:\n  - {name: a, engine: postgres, host: h, port: " + b"9" * 5000 + b"}\n",
     "line 2: instances.0.port: a number of 5000 digits"),
    (b"[" * 3000, "line 1: nested too deeply"),
    (b"instances:\n  - {name: a, engine: postgres, host: h}\n  - !!python/object:os.system {}\n",
     "line 3: not valid YAML: could not determine a constructor"),
])
def test_files_that_are_not_good_yaml_say_which_line(data, expected):
    errors = _refusal(data, "yaml")
    assert any(e.startswith(expected) or expected in e for e in errors), errors


def test_a_csv_cell_spanning_lines_puts_the_row_and_its_line_in_the_error():
    text = ('name,engine,host,overrides\na,postgres,h,"{\n ""health"": {}\n}"\n\n'
            'b,postgres,h,"{""health"": {""interval_s"": 1}}"\n')
    assert _refusal(text, "csv") == [("row 3 (line 6): overrides.health.interval_s: Input should be greater than "
                                     "or equal to 5")]


def test_a_csv_with_an_unclosed_quote_or_repeated_column_is_refused():
    assert _refusal('name,engine,host\na,postgres,"h\n', "csv")[0].startswith("row 2: not readable as CSV")
    assert _refusal("name,engine,host,host\na,postgres,h,h\n", "csv") == ["row 1: column(s) host given twice"]


# --- Through the command, against a real store -----------------------------------------------

SEED = """\
servers:
  - {name: seed-pg, engine: postgres, host: seed1.example, databases: [shop, billing], tags: {env: prod}}
instances:
  - {name: seed-my, engine: mariadb, host: seed2.example, credential: "env:DBFLEET_CRED_MY"}
  - {name: late.shop, engine: postgres, host: seed3.example}
"""
SNAPSHOT = [("select id, name, engine, host, port, \"user\", credential, tags::text, enabled, databases::text "
            "from servers order by id"),
            ("select id, name, server_id, engine, host, port, dbname, \"user\", credential, tags::text, enabled, "
            "overrides::text, schemas::text from instances order by id"),
            "select id, actor, action, target, details::text from audit_log order by id",
            "select count(*) from findings"]
runner = CliRunner()


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    name = f"dbf_fz18_inv_{os.getpid()}"
    url = asyncio.run(create_database(name))
    migrate(url)
    saved = {k: os.environ.get(k) for k in ("DBFLEET_DATABASE_URL", "DBFLEET_CONFIG", "COLUMNS")}
    os.environ.update({"DBFLEET_DATABASE_URL": url, "COLUMNS": "400"})
    os.environ.pop("DBFLEET_CONFIG", None)
    get_settings.cache_clear()
    seed = tmp_path_factory.mktemp("seed") / "seed.yaml"
    seed.write_text(SEED)
    result = runner.invoke(cli, ["inventory", "import", str(seed)])
    assert result.exit_code == 0, result.output
    yield url, tmp_path_factory.mktemp("files")
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    get_settings.cache_clear()
    asyncio.run(drop_database(name))


def snapshot(url: str) -> list[list[tuple]]:
    async def read():
        conn = await asyncpg.connect(url)
        try:
            return [[tuple(r) for r in await conn.fetch(q)] for q in SNAPSHOT]
        finally:
            await conn.close()
    return asyncio.run(read())


def import_file(fuzz_store, data: bytes, fmt: str):
    url, folder = fuzz_store
    path = folder / f"fleet.{fmt}"
    path.write_bytes(data)
    before = snapshot(url)
    result = runner.invoke(cli, ["inventory", "import", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.output, result.exception)
    return result, before, snapshot(url)


STORE_FUZZ = settings(FUZZ, max_examples=STORE_EXAMPLES,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.function_scoped_fixture])


@STORE_FUZZ
@given(st.one_of(wrong_yaml().map(lambda c: (c[0], "yaml", f"line {c[1][0]}", c[2])),
                 wrong_csv().map(lambda c: (c[0], "csv", c[1], c[2]))))
def test_the_import_command_refuses_a_wrong_file_whole_and_the_store_is_unchanged(fuzz_store, case):
    text, fmt, _, field = case
    result, before, after = import_file(fuzz_store, text.encode(), fmt)
    assert result.exit_code == 1, result.output
    assert "nothing was imported" in result.stderr
    assert field in result.stderr and re.search(r"(line|row) \d+", result.stderr), result.stderr
    assert PASSWORD not in result.output + result.stderr
    assert after == before, "a refused file wrote nothing"


@STORE_FUZZ
@given(garbage())
def test_the_import_command_on_garbage_exits_cleanly_and_refusals_write_nothing(fuzz_store, case):
    data, fmt = case
    result, before, after = import_file(fuzz_store, data, fmt)
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    if result.exit_code == 1:
        assert "nothing was imported" in result.stderr and after == before, result.stderr
        assert re.search(r"(line|row) \d+", result.stderr), result.stderr


@STORE_FUZZ
@given(valid_file())
def test_the_import_command_takes_every_good_file(fuzz_store, case):
    """What passes validation fits the store: no column too short, no NUL, no JSON it cannot hold."""
    text, fmt, count = case
    result, _, _ = import_file(fuzz_store, text.encode(), fmt)
    assert result.exit_code == 0, result.output
    assert f"created {count}," in result.stdout or "updated" in result.stdout, result.stdout


def test_a_file_the_store_cannot_take_is_refused_whole_after_its_good_entries_were_written(fuzz_store):
    """A conflict found only in the store, after earlier items were upserted in the same
    transaction: they are rolled back with it."""
    text = ("servers:\n  - {name: late-ok, engine: postgres, host: late-ok.example, databases: [a, b]}\n"
            "  - {name: late, engine: postgres, host: late.example, databases: [shop]}\n")
    result, before, after = import_file(fuzz_store, text.encode(), "yaml")
    assert result.exit_code == 1, result.output
    assert "line 3: databases.0: entry name 'late.shop' is an instance on another server" in result.stderr
    assert after == before and "nothing was imported" in result.stderr
