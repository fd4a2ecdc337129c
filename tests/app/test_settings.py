"""Settings: DBFLEET_ environment (nested with __) over dbfleet.yaml; bad values name their path."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings

YAML = """\
worker:
  concurrency: 8
  connect_timeout_s: 3
collectors:
  health:
    interval_s: 30
    thresholds: {connections_warning_pct: 70}
    by_tag:
      env=prod: {connections_warning_pct: 60}
"""


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("DBFLEET_")]:
        monkeypatch.delenv(key)
    return monkeypatch


def test_defaults(clean_env):
    s = Settings()
    assert s.database_url is None and s.worker.shard == "0/1" and s.api.port == 8080
    assert s.collector("anything").enabled is True


def test_yaml_file_then_environment_on_top(clean_env, tmp_path):
    path = tmp_path / "dbfleet.yaml"
    path.write_text(YAML)
    clean_env.setenv("DBFLEET_CONFIG", str(path))
    clean_env.setenv("DBFLEET_WORKER__CONCURRENCY", "4")
    clean_env.setenv("DBFLEET_DATABASE_URL", "postgresql://u@h/store")
    clean_env.setenv("DBFLEET_SHARD", "auto")
    s = Settings()
    assert s.worker.concurrency == 4, "the environment wins over the file"
    assert s.worker.connect_timeout_s == 3
    assert s.database_url == "postgresql://u@h/store" and s.shard == "auto"
    health = s.collector("health")
    assert (health.interval_s, health.thresholds, health.by_tag) == (
        30, {"connections_warning_pct": 70}, {"env=prod": {"connections_warning_pct": 60}})


@pytest.mark.parametrize("yaml_text, path", [
    ("worker:\n  concurrency: 0\n", "worker.concurrency"),
    ("worker:\n  metrics_port: 70000\n", "worker.metrics_port"),
    ("colectors: {}\n", "colectors"),
    ("collectors:\n  health:\n    by_tag: {prod: {}}\n", "collectors.health.by_tag"),
    ("collectors:\n  health:\n    interval_s: 1\n", "collectors.health.interval_s"),
])
def test_bad_config_names_the_path(clean_env, tmp_path, yaml_text: str, path: str):
    (tmp_path / "c.yaml").write_text(yaml_text)
    clean_env.setenv("DBFLEET_CONFIG", str(tmp_path / "c.yaml"))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert path in str(caught.value)


def test_missing_config_file_is_an_error(clean_env, tmp_path):
    clean_env.setenv("DBFLEET_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match="DBFLEET_CONFIG points at .*nope.yaml"):
        Settings()


def test_config_problems_name_every_section_and_path():
    from app.settings import Settings, config_problems

    settings = Settings(alerting={"route": {"receiver": "nobody"}},
                        cloud={"aws": {"regions": "eu-west-1", "interval_s": 1}},
                        partitions={"policies": [{"instances": "not-a-list"}]})
    problems = config_problems(settings)
    assert any(p.startswith("alerting.route.receiver") for p in problems)
    assert any(p.startswith("cloud.aws.interval_s") for p in problems)
    assert any(p.startswith("partitions.policies[0].instances") for p in problems)
    assert config_problems(Settings()) == []
