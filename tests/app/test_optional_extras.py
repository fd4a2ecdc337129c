"""Without an optional extra dbfleet still imports and wires every part, and whatever needs the
extra says which one to install; `dbfleet worker` and `config check` refuse a receiver whose extra
is missing.

The extras are installed here, so each test runs Python in a subprocess whose sitecustomize makes
the extra's packages fail to import, as they would on a machine without them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOT_INSTALLED = '''
import os
import sys
from importlib.abc import MetaPathFinder

_BLOCKED = tuple(filter(None, os.environ.get("DBFLEET_TEST_NOT_INSTALLED", "").split(",")))


class _NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == top or name.startswith(top + ".") for top in _BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''
# The top-level packages each extra installs (azure-* all live in the `azure` namespace).
EXTRA_PACKAGES = {"aws": "boto3,botocore", "azure": "azure", "mysql": "aiomysql,pymysql",
                  "sqlserver": "aioodbc,pyodbc", "oracle": "oracledb"}
DBFLEET = str(Path(sys.executable).with_name("dbfleet"))
CLOSED_STORE = "postgresql://postgres@127.0.0.1:9/dbfleet_extras"  # refused at once if ever reached


def run_without(extra: str | None, args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `args` with the extra's packages made unimportable (None: everything installed)."""
    (tmp_path / "sitecustomize.py").write_text(NOT_INSTALLED)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DBFLEET_")}
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    clean.update(env, PYTHONPATH=path, DBFLEET_TEST_NOT_INSTALLED=EXTRA_PACKAGES.get(extra, ""))
    return subprocess.run(args, env=clean, cwd=Path(__file__).parents[2], capture_output=True, text=True,
                          timeout=120)


WIRING = '''
import json
import sys
import app.scheduler

worker_dispatches_alerts = "app.alerting.dispatcher" in sys.modules  # imported plainly, not skipped
from app.cli import cli
from app.main import create_app
from app.settings import Settings
from collectors.registry import all_specs

api = create_app(Settings(), "postgresql://unused", check_migrated=False)
print(json.dumps({
    "commands": sorted(g.name for g in cli.registered_groups) + sorted(c.name or c.callback.__name__
                                                                       for c in cli.registered_commands),
    "routes": sorted(f"{method} {path}" for path, ops in api.openapi()["paths"].items() for method in ops),
    "collectors": sorted(f"{s.engine}/{s.name}" for s in all_specs()),
    "worker_dispatches_alerts": worker_dispatches_alerts,
}))
'''


@pytest.fixture(scope="module")
def full_wiring(tmp_path_factory) -> dict:
    r = run_without(None, [sys.executable, "-c", WIRING], tmp_path_factory.mktemp("full"))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("extra", sorted(EXTRA_PACKAGES))
def test_every_part_is_wired_without_an_extra(extra, full_wiring, tmp_path):
    r = run_without(extra, [sys.executable, "-c", WIRING], tmp_path)
    assert r.returncode == 0, r.stderr
    wiring = json.loads(r.stdout)
    assert wiring == full_wiring
    assert wiring["worker_dispatches_alerts"]
    assert {"alerts", "discover", "partitions"} <= set(wiring["commands"])


def alerting_config(tmp_path: Path, receiver: dict) -> str:
    path = tmp_path / "dbfleet.yaml"
    path.write_text(json.dumps({"alerting": {"route": {"receiver": receiver["name"]}, "receivers": [receiver]}}))
    return str(path)


CLOUDWATCH = {"type": "cloudwatch", "name": "cw-prod", "region": "eu-west-1"}
AZURE_MONITOR = {"type": "azure_monitor", "name": "az-prod", "endpoint": "https://dce.ingest.monitor.azure.com",
                 "rule_id": "dcr-0123", "stream_name": "Custom-DbfleetAlerts_CL"}
NEEDS_EXTRA = [("aws", CLOUDWATCH), ("azure", AZURE_MONITOR)]


@pytest.mark.parametrize(("extra", "receiver"), NEEDS_EXTRA)
def test_worker_refuses_a_receiver_whose_extra_is_missing(extra, receiver, tmp_path):
    r = run_without(extra, [DBFLEET, "worker"], tmp_path, DBFLEET_CONFIG=alerting_config(tmp_path, receiver),
                    DBFLEET_DATABASE_URL=CLOSED_STORE)
    assert r.returncode == 2, r.stdout + r.stderr
    said = " ".join(r.stderr.split())  # rich wraps long lines at 80 columns
    assert f"receiver {receiver['name']!r} (type {receiver['type']}) needs the {extra} extra" in said
    assert f"pip install 'dbfleet[{extra}]'" in said
    assert "Traceback" not in said


@pytest.mark.parametrize(("extra", "receiver"), NEEDS_EXTRA)
def test_config_check_reports_a_receiver_whose_extra_is_missing(extra, receiver, tmp_path):
    r = run_without(extra, [DBFLEET, "config", "check"], tmp_path,
                    DBFLEET_CONFIG=alerting_config(tmp_path, receiver))
    assert r.returncode == 1, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert f"alerting.receivers[0]: receiver {receiver['name']!r} (type {receiver['type']})" in said
    assert f"pip install 'dbfleet[{extra}]'" in said


@pytest.mark.parametrize(("extra", "receiver"), NEEDS_EXTRA)
def test_config_check_accepts_the_same_receiver_with_the_extra_installed(extra, receiver, tmp_path):
    r = run_without(None, [DBFLEET, "config", "check"], tmp_path, DBFLEET_CONFIG=alerting_config(tmp_path, receiver))
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout


@pytest.mark.parametrize("extra", ["aws", "azure"])
def test_config_check_accepts_receivers_that_need_no_extra(extra, tmp_path):
    webhook = {"type": "webhook", "name": "ops", "url": "https://hooks.example.com/dbfleet"}
    r = run_without(extra, [DBFLEET, "config", "check"], tmp_path, DBFLEET_CONFIG=alerting_config(tmp_path, webhook))
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout


CONNECT = '''
import asyncio, sys
from collectors.engines.base import DriverUnavailable, Target, connect
from collectors.registry import all_specs

all_specs()  # as a sweep does first: loads the engine packages, which register their adapters

target = Target(name="db1", engine=sys.argv[1], host="", port=0, options={
    "arn": "arn:aws:rds:eu-west-1:123456789012:db:orders", "region": "westeurope",
    "resource_id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
                   "Microsoft.DBforPostgreSQL/flexibleServers/orders"})
try:
    asyncio.run(connect(target))
except DriverUnavailable as e:
    print(e.check, e)
'''


@pytest.mark.parametrize("extra", ["aws", "azure"])
def test_a_cloud_instance_without_its_extra_is_a_finding_naming_it(extra, tmp_path):
    r = run_without(extra, [sys.executable, "-c", CONNECT, extra], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("driver_unavailable ") and f"pip install 'dbfleet[{extra}]'" in r.stdout


CREDENTIAL = '''
import asyncio
import app.sweep  # the worker's sweeps register the cloud credential schemes
from app.inventory.credentials import CredentialError, resolve_credential

try:
    asyncio.run(resolve_credential("aws-sm:prod/orders#password", {"cloud": {"region": "eu-west-1"}}))
except CredentialError as e:
    print(e)
'''


def test_an_aws_secret_reference_without_the_extra_names_it(tmp_path):
    r = run_without("aws", [sys.executable, "-c", CREDENTIAL], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "aws-sm:prod/orders" in r.stdout and "pip install 'dbfleet[aws]'" in r.stdout


SEND = '''
import asyncio, sys
from app.alerting.config import AlertingConfig
from app.alerting.notification import Notification
from app.alerting.sinks import PermanentError, build_sink

config = AlertingConfig.model_validate({"receivers": [%s]}).receivers[0]
n = Notification(receiver=config.name, group_key="{}", status="firing", group_labels={}, alerts=[])
try:
    asyncio.run(build_sink(config).send(n))
except PermanentError as e:
    print(e)
'''


@pytest.mark.parametrize(("extra", "receiver"), NEEDS_EXTRA)
def test_a_send_without_the_extra_is_a_permanent_error_naming_it(extra, receiver, tmp_path):
    r = run_without(extra, [sys.executable, "-c", SEND % json.dumps(receiver)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"pip install 'dbfleet[{extra}]'" in r.stdout


async def test_aws_discovery_without_the_extra_names_it(store_url, tmp_path):
    r = run_without("aws", [DBFLEET, "discover", "aws", "--region", "eu-west-1", "--dry-run"], tmp_path,
                    DBFLEET_DATABASE_URL=store_url)
    assert r.returncode == 1, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "discovery failed in eu-west-1" in said and "pip install 'dbfleet[aws]'" in said


def test_azure_discovery_without_the_extra_names_it(tmp_path):
    r = run_without("azure", [DBFLEET, "discover", "azure", "--subscription", "00000000-0000-0000-0000-000000000001",
                              "--dry-run"], tmp_path, DBFLEET_DATABASE_URL=CLOSED_STORE)
    assert r.returncode == 1, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "Azure discovery needs the azure extra" in said and "pip install 'dbfleet[azure]'" in said
