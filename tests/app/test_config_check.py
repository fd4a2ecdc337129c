"""`dbfleet config check` fuzzed with hypothesis: a bad dbfleet.yaml is refused naming key path and line.

A good configuration touching every section is mutated at one key (a known-wrong value, or any
junk value), or replaced by garbage bytes. The command must exit non-zero on what it refuses,
name `line N: key.path` (or the environment variable), never print a traceback, and never print
a value (a pasted secret). DBFLEET_FUZZ_EXAMPLES scales the example counts (default 200).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from app.cli import cli
from app.settings import get_settings

EXAMPLES = int(os.environ.get("DBFLEET_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
SECRET = "AzSecret-fz18-9f3a0c77e1"
runner = CliRunner()

GOOD = {
    "store": {"retention_days": 14, "premake_days": 3},
    "worker": {"concurrency": 8, "shard": "0/1", "connect_timeout_s": 5.0, "statement_timeout_ms": 10000},
    "api": {"host": "127.0.0.1", "port": 8080},
    "credentials": {"env_prefixes": ["DBFLEET_CRED_"], "file_dirs": ["/var/run/secrets/dbfleet"]},
    "live": {"allow_analyze": False, "min_interval_s": 1.0},
    "collectors": {"health": {"interval_s": 60, "thresholds": {"connections_pct": 80},
                              "by_tag": {"env=prod": {"connections_pct": 90}}}},
    "alerting": {"route": {"receiver": "ops", "group_wait": "30s",
                           "routes": [{"matchers": ['severity="critical"'], "receiver": "ops"}]},
                 "receivers": [{"type": "webhook", "name": "ops", "url": "https://hooks.example.com/x",
                                "hmac_secret_ref": "env:DBFLEET_HOOK_KEY"}]},
    "partitions": {"policies": [{"instances": ["pg-*"], "tags": {"env": "prod"}}]},
    "cloud": {"aws": {"regions": ["eu-west-1"], "interval_s": 3600},
              "azure": {"client_secret": "env:DBFLEET_AZ_SECRET"}},
}


class Raw(str):
    """A YAML token written bare (.nan, a date), not as a JSON string."""


def _scalar(v) -> str:
    return str(v) if isinstance(v, Raw) else json.dumps(v)


def render(config: dict) -> tuple[str, dict[tuple, int]]:
    """Block-style YAML and the line of every key and list item, counted as it is written."""
    out: list[str] = []
    lines: dict[tuple, int] = {}

    def mapping(d: dict, indent: int, path: tuple, first: str = "") -> None:
        for j, (k, v) in enumerate(d.items()):
            pad = " " * indent if not (first and j == 0) else " " * (indent - 2) + first
            lines[(*path, k)] = len(out) + 1
            if isinstance(v, dict) and v:
                out.append(f"{pad}{json.dumps(k)}:")
                mapping(v, indent + 2, (*path, k))
            elif isinstance(v, list) and v and all(isinstance(x, dict) and x for x in v):
                out.append(f"{pad}{json.dumps(k)}:")
                for i, item in enumerate(v):
                    lines[(*path, k, i)] = len(out) + 1
                    mapping(item, indent + 4, (*path, k, i), first="- ")
            else:
                for i in range(len(v) if isinstance(v, list) else 0):
                    lines[(*path, k, i)] = len(out) + 1
                body = "[" + ", ".join(_scalar(x) for x in v) + "]" if isinstance(v, list) else _scalar(v)
                out.append(f"{pad}{json.dumps(k)}: {body}")

    mapping(config, 0, ())
    return "\n".join(out) + "\n", lines


def _set(config: dict, path: tuple, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return config


def _leaves(d, path=()) -> list[tuple]:
    out = [path] if path else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _leaves(v, (*path, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _leaves(v, (*path, i))
    return out


@pytest.fixture
def config_file(tmp_path):
    saved = {k: os.environ.get(k) for k in ("DBFLEET_CONFIG", "COLUMNS")}
    path = tmp_path / "dbfleet.yaml"
    os.environ.update({"DBFLEET_CONFIG": str(path), "COLUMNS": "400"})
    for k in [k for k in os.environ if k.startswith("DBFLEET_") and k != "DBFLEET_CONFIG"]:
        saved[k] = os.environ.pop(k)
    yield path
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    get_settings.cache_clear()


def check(path: Path, data: bytes):
    path.write_bytes(data)
    get_settings.cache_clear()
    result = runner.invoke(cli, ["config", "check"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


# Every line of a refusal says where: the file's line or the environment variable.
WHERE = re.compile(r"^(line \d+|DBFLEET_[A-Z0-9_]+): \S")


def _problems(result) -> list[str]:
    return [x.strip() for x in result.stderr.splitlines() if x.strip() and not x.startswith("configuration error")]


def test_the_good_configuration_is_valid(config_file):
    result = check(config_file, render(GOOD)[0].encode())
    assert result.exit_code == 0, result.output
    assert "configuration is valid" in result.stdout


WRONG = [
    (("worker", "concurrency"), 0), (("worker", "concurrency"), "many"), (("worker", "concurrency"), 10 ** 6),
    (("worker", "concurency"), 10), (("worker", "connect_timeout_s"), Raw(".nan")), (("api", "port"), 70000),
    (("api", "port"), Raw("9" * 5000)), (("store", "retention_days"), -1), (("store", "retension_days"), 7),
    (("credentials", "env_prefixes"), "DBFLEET_CRED_"), (("credentials", "file_dirs", 0), "relative/dir"),
    (("credentials", "env_prefixes", 0), "DBFLEET_"), (("collectors", "health", "interval_s"), 1),
    (("collectors", "health", "by_tag"), {"noequals": {"x": 1}}), (("alerting", "route", "receiver"), "nobody"),
    (("alerting", "receivers", 0, "type"), "carrier-pigeon"), (("alerting", "route", "group_wait"), "soon"),
    (("alerting", "route", "group_wait"), 10 ** 20),
    (("alerting", "receivers", 0, "hmac_secret_ref"), 5), (("partitions", "policies"), 5),
    (("partitions", "policies", 0, "instances"), "pg-*"), (("cloud", "aws", "interval_s"), 1),
    (("cloud", "azure", "client_secret"), SECRET), (("cloud", "nimbus"), {"x": 1}), (("frobnicate",), 1),
    (("live", "allow_terminate"), "perhaps"), (("worker",), [1, 2]), (("alerting",), "all"),
    (("cloud", "azure", "subscriptions"), ["prod"]), (("store", "embedded_dir"), "a\x00b"),
]


@pytest.mark.parametrize(("path", "value"), WRONG, ids=lambda x: ".".join(map(str, x)) if isinstance(x, tuple) else None)
def test_a_wrong_key_is_refused_naming_its_path_and_line(config_file, path, value):
    text, lines = render(_set(GOOD, path, value))
    result = check(config_file, text.encode())
    assert result.exit_code != 0, result.output
    problems = _problems(result)
    assert problems and all(WHERE.match(p) for p in problems), problems
    assert any(_names(p, path, lines) for p in problems), (problems, path)
    assert SECRET not in result.output, "a pasted secret is never printed"


def _names(problem: str, path: tuple, lines: dict[tuple, int]) -> bool:
    """`line L: P: ...` where P is the mutated path, a parent of it (the whole item is wrong) or a
    child (a key under it is missing), and L is the line of P's deepest part the file has."""
    m = re.match(r"line (\d+): ([^:]+): ", problem)
    if not m:
        return False
    named = tuple(int(x[1:-1]) if x.startswith("[") else x for x in re.findall(r"\[\d+\]|[^.\[\]]+", m.group(2)))
    if named[:len(path)] != path and path[:len(named)] != named:
        return False
    deepest = next(named[:n] for n in range(len(named), 0, -1) if named[:n] in lines)
    return int(m.group(1)) == lines[deepest]


JUNK = st.one_of(st.integers(-10 ** 20, 10 ** 20), st.text(max_size=40), st.just(SECRET), st.none(), st.booleans(),
                 st.floats(allow_nan=False, allow_infinity=False), st.just(Raw(".nan")), st.just(Raw("2024-01-01")),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
                 st.just("a\x00b"), st.just("x" * 20000))


@FUZZ
@given(st.sampled_from(_leaves(GOOD)), JUNK)
def test_any_junk_at_any_key_is_accepted_or_refused_with_its_line_never_a_crash(config_file, path, value):
    result = check(config_file, render(_set(GOOD, path, value))[0].encode())
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        problems = _problems(result)
        assert problems and all(WHERE.match(p) for p in problems), problems


SECRET_KEYS = [("cloud", "azure", "client_secret"), ("alerting", "receivers", 0, "hmac_secret_ref")]


@FUZZ
@given(st.sampled_from(SECRET_KEYS), st.text(min_size=8, max_size=60).filter(lambda s: s.strip() == s and s.isprintable()))
def test_a_secret_pasted_where_its_reference_belongs_is_never_printed(config_file, path, value):
    result = check(config_file, render(_set(GOOD, path, value))[0].encode())
    assert value not in result.output


def _insert(at: int, junk: bytes) -> bytes:
    good = render(GOOD)[0].encode()
    return good[:at % len(good)] + junk + good[at % len(good):]


@FUZZ
@given(st.one_of(st.binary(max_size=2000),
                 st.tuples(st.integers(0, 4000), st.binary(min_size=1, max_size=8)).map(lambda t: _insert(*t)),
                 st.sampled_from(["utf-16", "utf-8-sig", "latin-1", "utf-32"]).map(
                     lambda enc: (render(GOOD)[0] + "# café\n").encode(enc))))
def test_garbage_config_is_refused_with_a_line_never_a_crash(config_file, data):
    result = check(config_file, data)
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        problems = _problems(result)
        assert problems and all(WHERE.match(p) for p in problems), problems


@pytest.mark.parametrize(("text", "expected"), [
    ("worker:\n  concurrency: 8\n  concurrency: 9\n", "line 3: worker.concurrency: given twice (also at line 2)"),
    ("worker: [\n", "line 2: not valid YAML"),
    ("- worker\n", "line 1: expected a mapping of sections"),
    ("worker:\n\tconcurrency: 8\n", "line 2: not valid YAML"),
    ("1: x\n", "line 1: 1: a section name must be text"),
])
def test_config_files_that_are_not_good_yaml_say_which_line(config_file, text, expected):
    result = check(config_file, text.encode())
    assert result.exit_code == 2 and expected in result.stderr, result.stderr


def test_an_environment_variable_is_named_instead_of_a_line(config_file):
    os.environ["DBFLEET_WORKER__CONCURRENCY"] = "0"
    try:
        result = check(config_file, render(GOOD)[0].encode())
    finally:
        del os.environ["DBFLEET_WORKER__CONCURRENCY"]
    assert result.exit_code == 2
    assert "DBFLEET_WORKER__CONCURRENCY: worker.concurrency: Input should be greater than or equal to 1" in result.stderr


def test_the_real_command_refuses_a_bad_file_without_a_traceback(tmp_path):
    path = tmp_path / "dbfleet.yaml"
    text, lines = render(_set(_set(GOOD, ("api", "port"), 70000), ("cloud", "azure", "client_secret"), SECRET))
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBFLEET_")}
    proc = subprocess.run([str(Path(sys.executable).parent / "dbfleet"), "config", "check"], capture_output=True, text=True,
                          check=False,
                          env={**env, "DBFLEET_CONFIG": str(path), "COLUMNS": "400"}, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"line {lines[('api', 'port')]}: api.port: Input should be less than or equal to 65535" in proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stdout + proc.stderr
