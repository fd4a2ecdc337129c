"""The dbfleet command through typer's CliRunner against the test store."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli
from app.settings import get_settings

runner = CliRunner()


@pytest.fixture
def env(clean_store, monkeypatch) -> dict[str, str]:
    values = {"DBFLEET_DATABASE_URL": clean_store.url, "DBFLEET_WORKER__BACKOFF_BASE_S": "0",
              "DBFLEET_WORKER__CONNECT_TIMEOUT_S": "2"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DBFLEET_CONFIG", raising=False)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


async def invoke(*args: str, input: str | None = None):
    """Run the CLI in a thread: its commands start their own event loop."""
    return await asyncio.to_thread(runner.invoke, cli, list(args), input=input)


async def names(store) -> list[str]:
    async with store.raw() as conn:
        return [r[0] for r in await conn.fetch("select name from instances order by name")]


GOOD = """\
instances:
  - {name: a, engine: postgres, host: h1, tags: {env: prod}, credential: "env:DBFLEET_CRED_A_PW"}
  - {name: b, engine: mysql, host: h2, port: 3307, enabled: false}
"""
BAD_CSV = "name,engine,host,port\nok1,postgres,h,\nbad,postgres,h,70000\nok2,db2,h,\n"


async def test_inventory_import_good_file_then_again(env, clean_store, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD)
    r = await invoke("inventory", "import", str(path))
    assert r.exit_code == 0, r.output + r.stderr
    assert "created 2, updated 0, unchanged 0" in r.stdout
    assert await names(clean_store) == ["a", "b"]
    r = await invoke("inventory", "import", str(path))
    assert "created 0, updated 0, unchanged 2" in r.stdout


async def test_inventory_import_bad_file_names_rows_and_writes_nothing(env, clean_store, tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text(BAD_CSV)
    r = await invoke("inventory", "import", str(path))
    assert r.exit_code == 1
    assert "row 3: port: Input should be less than or equal to 65535" in r.stderr
    assert "row 4: engine:" in r.stderr
    assert "nothing was imported" in r.stderr
    assert await names(clean_store) == []


async def test_inventory_import_refuses_a_credential_outside_the_allow_list(env, clean_store, tmp_path, monkeypatch):
    monkeypatch.setenv("DBF_I12_OTHER", "s3cret-cli")
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD + '  - {name: c, engine: postgres, host: h3, credential: "env:DBF_I12_OTHER"}\n')
    r = await invoke("inventory", "import", str(path))
    assert r.exit_code == 1
    stderr = " ".join(r.stderr.split())  # rich wraps long lines at the terminal's width
    assert "line 4: credential: env: references must name a variable starting with DBFLEET_CRED_" in stderr
    assert "nothing was imported" in r.stderr and "s3cret-cli" not in r.output
    assert await names(clean_store) == []


async def test_config_check_lists_allow_list_problems(env, tmp_path, monkeypatch):
    config = tmp_path / "dbfleet.yaml"
    config.write_text("credentials:\n  env_prefixes: ['', DBFLEET_]\n  file_dirs: [secrets, /run/x]\n")
    monkeypatch.setenv("DBFLEET_CONFIG", str(config))
    get_settings.cache_clear()
    r = await invoke("config", "check")
    assert r.exit_code == 1
    stderr = " ".join(r.stderr.split())
    for problem in ("credentials.env_prefixes[0]: empty", "credentials.env_prefixes[1]: 'DBFLEET_' would let",
                    "credentials.file_dirs[0]: 'secrets' is relative"):
        assert problem in stderr, stderr
    assert "file_dirs[1]" not in stderr


async def test_inventory_import_missing_file(env, tmp_path):
    r = await invoke("inventory", "import", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 1 and "cannot read" in r.stderr


async def test_inventory_export_yaml_and_csv(env, clean_store, tmp_path):
    (tmp_path / "fleet.yaml").write_text(GOOD)
    assert (await invoke("inventory", "import", str(tmp_path / "fleet.yaml"))).exit_code == 0
    r = await invoke("inventory", "export")
    assert r.exit_code == 0
    # The servers form: each instance is an entry of the server the store made for its endpoint.
    exported = yaml.safe_load(r.stdout)["servers"]
    assert [(s["name"], s["port"], s.get("credential"), s["databases"]) for s in exported] == [
        ("h1:5432", 5432, "env:DBFLEET_CRED_A_PW", [{"name": "a"}]),
        ("h2:3307", 3307, None, [{"name": "b", "enabled": False}])]
    (tmp_path / "again.yaml").write_text(r.stdout)
    r = await invoke("inventory", "import", str(tmp_path / "again.yaml"))
    assert "servers: created 0, updated 0, unchanged 2" in r.stdout and "created 0, updated 0, unchanged 2" in r.stdout
    r = await invoke("inventory", "export", "--format", "csv")
    assert r.stdout.splitlines()[0].startswith("name,engine,host,port")
    assert r.stdout.splitlines()[1].startswith("a,postgres,h1,5432,")
    (tmp_path / "again.csv").write_text(r.stdout)
    r = await invoke("inventory", "import", str(tmp_path / "again.csv"))
    assert "created 0, updated 0, unchanged 2" in r.stdout
    assert (await invoke("inventory", "export", "--format", "xml")).exit_code == 2


async def test_inventory_discover_adds_the_matching_databases_of_a_server(env, clean_store, tmp_path, target_db):
    db = await target_db(prefix="dbf_srv_cli")
    (tmp_path / "servers.yaml").write_text(
        "servers:\n  - {name: pg-local, engine: postgres, host: 127.0.0.1, user: postgres, "
        "databases: {include: ['dbf_srv_cli_*']}}\n"
        "  - {name: pg-listed, engine: postgres, host: 127.0.0.2, databases: [x]}\n")
    r = await invoke("inventory", "import", str(tmp_path / "servers.yaml"))
    assert "servers: created 2" in r.stdout, r.output + r.stderr
    r = await invoke("inventory", "discover", "--server", "pg-local")
    assert r.exit_code == 0, r.output + r.stderr
    assert f"pg-local.{db}" in r.stdout and f"pg-local.{db}" in await names(clean_store)
    r = await invoke("inventory", "discover", "--server", "pg-listed")
    assert r.exit_code == 1 and "no server named 'pg-listed' with discovery patterns" in r.stderr


async def test_keys_create_prints_a_key_that_authenticates(env, app, client):
    r = await invoke("keys", "create", "--role", "admin", "--name", "ops")
    assert r.exit_code == 0
    key = r.stdout.strip()
    assert key.startswith("dbf_") and "\n" not in key
    resp = await client.post("/api/v1/instances", headers={"Authorization": f"Bearer {key}"},
                             json={"name": "via-cli-key", "engine": "postgres", "host": "h"})
    assert resp.status_code == 201
    assert (await invoke("keys", "create", "--role", "root")).exit_code == 2


@pytest.fixture
async def fleet_file(target_db, tmp_path):
    dbs = [await target_db(), await target_db()]
    items = [{"name": f"pg-{i}", "engine": "postgres", "host": "127.0.0.1", "dbname": db, "user": "postgres",
              "tags": {"env": "prod"}} for i, db in enumerate(dbs)]
    items.append({"name": "pg-down", "engine": "postgres", "host": "127.0.0.1", "port": 1})
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"instances": items}))
    return path


async def test_sweep_json_prints_one_object_per_sweep(env, fleet_file):
    assert (await invoke("inventory", "import", str(fleet_file))).exit_code == 0
    r = await invoke("sweep", "--collector", "partitions", "--repeat", "2", "--json")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        s = json.loads(line)
        assert {"instances", "ok", "failed", "wall_s", "cpu_s", "findings_open"} <= set(s)
        assert (s["instances"], s["ok"], s["failed"]) == (3, 2, 1)
        assert s["findings_open"] >= 1 and s["wall_s"] >= 0 and s["cpu_s"] >= 0
    r = await invoke("sweep", "--collector", "partitions", "--tag", "env=prod", "--json")
    assert json.loads(r.stdout)["instances"] == 2


async def test_sweep_prints_a_summary_table(env, fleet_file):
    await invoke("inventory", "import", str(fleet_file))
    r = await invoke("sweep", "--collector", "health", "--instance", "pg-down")
    assert r.exit_code == 0
    assert "sweep summary" in r.stdout and "pg-down" in r.stdout and "cannot connect" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["sweep", "--collector", "nope"], "unknown collector(s): nope"),
    (["sweep", "--tag", "env"], "tag selector 'env' must be key=value"),
])
async def test_sweep_rejects_bad_options(env, args, message):
    r = await invoke(*args)
    assert r.exit_code == 2 and message in r.stderr


async def test_findings_json(env, fleet_file):
    await invoke("inventory", "import", str(fleet_file))
    await invoke("sweep", "--collector", "health", "--json")
    r = await invoke("findings", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    down = [f for f in rows if f["instance"] == "pg-down"]
    assert [(f["check"], f["severity"], f["state"], f["object"]) for f in down] == \
        [("instance_unreachable", "critical", "open", "server")]
    assert {"instance", "check", "object", "severity", "state", "title", "details", "recommendation",
            "first_seen", "last_seen"} <= set(down[0])
    critical = json.loads((await invoke("findings", "--json", "--severity", "critical")).stdout)
    assert {f["severity"] for f in critical} == {"critical"} and len(critical) >= 1
    only = json.loads((await invoke("findings", "--json", "--instance", "pg-0")).stdout)
    assert {f["instance"] for f in only} <= {"pg-0"}
    table = await invoke("findings")
    assert f"{len(rows)} findings" in table.stdout and "pg-down" in table.stdout


async def test_a_bad_config_file_is_a_clear_error(env, monkeypatch, tmp_path):
    monkeypatch.setenv("DBFLEET_CONFIG", str(tmp_path / "missing.yaml"))
    get_settings.cache_clear()
    r = await invoke("findings")
    assert r.exit_code == 2 and "configuration error" in r.stderr and "missing.yaml" in r.stderr
    (tmp_path / "bad.yaml").write_text("worker:\n  concurrency: 0\n")
    monkeypatch.setenv("DBFLEET_CONFIG", str(tmp_path / "bad.yaml"))
    get_settings.cache_clear()
    r = await invoke("findings")
    assert r.exit_code == 2 and "worker.concurrency" in r.stderr


def _month(offset: int) -> str:
    from datetime import date

    today = date.today()
    y, m = divmod(today.month - 1 + offset, 12)
    return date(today.year + y, m + 1, 1).isoformat()


PARTITIONED = "create table events (id bigint not null, at timestamptz not null) partition by range (at);\n" + "".join(
    f"create table events_m{i + 2} partition of events for values from ('{_month(i)}') to ('{_month(i + 1)}');\n"
    for i in (-2, -1, 0))


async def test_partitions_plan_then_apply_from_the_terminal(env, clean_store, target_db, tmp_path, monkeypatch):
    db = await target_db(PARTITIONED)
    config = tmp_path / "dbfleet.yaml"
    config.write_text("partitions:\n  policies:\n    - {table: public.events, premake: 1, retention: '1 month'}\n")
    monkeypatch.setenv("DBFLEET_CONFIG", str(config))
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(f"- {{name: parts, engine: postgres, host: 127.0.0.1, port: 5432, dbname: {db}, user: postgres}}\n")
    assert (await invoke("inventory", "import", str(inventory))).exit_code == 0
    plan = await invoke("partitions", "plan", "--instance", "parts", "--json")
    assert plan.exit_code == 0, plan.output
    statements = json.loads(plan.output)["parts"]
    actions = sorted({s["action"] for s in statements})
    assert actions == ["create_partition", "detach_partition", "drop_partition"]
    applied = await invoke("partitions", "apply", "--instance", "parts", "--yes", "--json")
    assert {o["status"] for o in json.loads(applied.output)["parts"]} == {"ok"}
    again = await invoke("partitions", "plan", "--instance", "parts", "--json")
    assert json.loads(again.output)["parts"] == []


@pytest.fixture
async def partitioned_fleet(env, target_db, tmp_path, monkeypatch):
    """Two instances (env=prod, env=dev), each a database with `events` (a policy names it) and
    `metrics` (no policy does); returns {instance name: database}."""
    config = tmp_path / "dbfleet.yaml"
    config.write_text("partitions:\n  policies:\n    - {table: public.events, premake: 1, retention: '1 month'}\n")
    monkeypatch.setenv("DBFLEET_CONFIG", str(config))
    get_settings.cache_clear()
    metrics = PARTITIONED.replace("events", "metrics")
    dbs = {"parts-prod": await target_db(PARTITIONED + metrics, prefix="dbf_i12"),
           "parts-dev": await target_db(PARTITIONED + metrics, prefix="dbf_i12")}
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(yaml.safe_dump([{"name": name, "engine": "postgres", "host": "127.0.0.1", "port": 5432,
                                          "dbname": db, "user": "postgres", "tags": {"env": name.split("-")[1]}}
                                         for name, db in dbs.items()]))
    imported = await invoke("inventory", "import", str(inventory))
    assert imported.exit_code == 0, imported.output
    return dbs


async def test_partitions_apply_without_a_scope_is_refused(partitioned_fleet, partitions_of):
    before = {db: await partitions_of(db) for db in partitioned_fleet.values()}
    r = await invoke("partitions", "apply", "--yes")
    assert r.exit_code == 2
    assert all(option in r.stderr for option in ("--instance", "--tag", "--all"))
    assert {db: await partitions_of(db) for db in partitioned_fleet.values()} == before


@pytest.mark.parametrize("answer", ["n\n", None], ids=["no", "no stdin"])
async def test_partitions_apply_shows_the_plan_and_a_no_applies_nothing(partitioned_fleet, partitions_of, answer):
    db = partitioned_fleet["parts-prod"]
    before = await partitions_of(db)
    r = await invoke("partitions", "apply", "--instance", "parts-prod", input=answer)
    assert r.exit_code == 1 and "nothing applied" in r.stderr
    assert "Apply 3 statements to 1 tables on 1 instances? [y/N]" in r.output
    assert "CREATE TABLE" in r.output and "DROP TABLE" in r.output, "the plan shows the exact DDL"
    assert "no policy configured: planned only" in r.output, "metrics is shown, and marked as not applied"
    assert await partitions_of(db) == before


async def test_partitions_apply_yes_after_the_question_applies(partitioned_fleet, partitions_of):
    db = partitioned_fleet["parts-prod"]
    before = await partitions_of(db)
    r = await invoke("partitions", "apply", "--instance", "parts-prod", "--json", input="y\n")
    assert r.exit_code == 0, r.output
    # CliRunner echoes the typed answer onto stdout (a terminal would not); the JSON follows it.
    outcomes = json.loads(r.stdout[r.stdout.index("{"):])["parts-prod"]
    assert {o["status"] for o in outcomes if o["table"] == "public.events"} == {"ok"}
    assert await partitions_of(db) != before


async def test_partitions_apply_all_skips_a_table_without_a_policy(partitioned_fleet, partitions_of):
    metrics_before = {db: await partitions_of(db, "metrics") for db in partitioned_fleet.values()}
    events_before = {db: await partitions_of(db) for db in partitioned_fleet.values()}
    r = await invoke("partitions", "apply", "--all", "--yes", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert set(result) == {"parts-prod", "parts-dev"}
    for outcomes in result.values():
        metrics = [o for o in outcomes if o["table"] == "public.metrics"]
        assert metrics and {(o["status"], o["message"]) for o in metrics} == \
            {("planned_only", "no policy configured: planned only")}
    assert {db: await partitions_of(db, "metrics") for db in partitioned_fleet.values()} == metrics_before
    assert [await partitions_of(db) != events_before[db] for db in partitioned_fleet.values()] == [True, True]


async def test_partitions_apply_by_tag_touches_only_matching_instances(partitioned_fleet, partitions_of):
    dev_before = await partitions_of(partitioned_fleet["parts-dev"])
    prod_before = await partitions_of(partitioned_fleet["parts-prod"])
    r = await invoke("partitions", "apply", "--tag", "env=prod", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert list(json.loads(r.stdout)) == ["parts-prod"]
    assert await partitions_of(partitioned_fleet["parts-dev"]) == dev_before
    assert await partitions_of(partitioned_fleet["parts-prod"]) != prod_before

