"""`dbfleet alerts route-test` and config_check, through the real settings loader (dbfleet.yaml)."""

import pytest
import yaml
from typer.testing import CliRunner

from app.alerting.cli import alerts_app, config_check
from app.settings import Settings, get_settings

CONFIG = {"alerting": {
    "route": {"receiver": "ops", "group_by": ["instance"],
              "routes": [{"matchers": ["severity=critical"], "receiver": "pager", "continue": True},
                         {"matchers": ["team=payments"], "receiver": "payments"}]},
    "receivers": [{"type": "webhook", "name": n, "url": "https://example.invalid/"} for n in ("ops", "pager", "payments")],
}}


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    def write(data):
        path = tmp_path / "dbfleet.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setenv("DBFLEET_CONFIG", str(path))
        get_settings.cache_clear()
        return path

    yield write
    get_settings.cache_clear()


@pytest.mark.parametrize("labels,out", [
    (["alertname=lag", "severity=critical", "team=payments"], "pager\npayments\n"),
    (["alertname=lag", "severity=warning"], "ops\n"),
])
def test_route_test_prints_receivers(config_file, labels, out):
    config_file(CONFIG)
    result = CliRunner().invoke(alerts_app, ["route-test", *labels])
    assert result.exit_code == 0, result.output
    assert result.output == out


def test_route_test_verbose_and_bad_labels(config_file):
    config_file(CONFIG)
    result = CliRunner().invoke(alerts_app, ["route-test", "-v", "instance=db1"])
    assert 'ops\troute=0\tgroup=0:{"instance":"db1"}' in result.output
    assert CliRunner().invoke(alerts_app, ["route-test", "novalue"]).exit_code != 0


def test_config_check_reports_paths(config_file):
    broken = {"alerting": {**CONFIG["alerting"], "route": {"receiver": "nobody", "routes": [{"matchers": ["x=~("]}]}}}
    config_file(broken)
    errors = config_check(Settings())
    assert any(e.startswith("alerting.route.routes[0].matchers") for e in errors)
    result = CliRunner().invoke(alerts_app, ["route-test", "a=b"])
    assert result.exit_code == 2 and "alerting.route.routes[0].matchers" in result.output
    config_file(CONFIG)
    assert config_check(Settings()) == []
