"""helm/dbfleet renders, lints strictly and validates against Kubernetes 1.30, with real properties."""

from __future__ import annotations

import base64
import os
import json
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (.ci/run installs it)")

import kubernetes_validate  # noqa: E402

from helm_render import (  # noqa: E402
    CHART_DIR, CI_VALUES, KUBE_VERSION, RELEASE, ci_values, env_of, notes, one, pod_specs, render,
)

FULLNAME = f"{RELEASE}-dbfleet"
SECRET_URL = "postgresql+asyncpg://dbfleet:s3cr3t-sentinel-pw@pg.internal:5432/dbfleet"
# Custom resources: no schema in kubernetes-validate, so their shape is checked by hand below.
CRD_GROUPS = ("monitoring.coreos.com/",)


@pytest.mark.parametrize("values_file", [None, CI_VALUES], ids=["default-values", "ci-shards-values"])
def test_lint_strict_has_no_errors(values_file):
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    report = helm.lint(str(CHART_DIR), values, strict=True, kube_version=KUBE_VERSION)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Strict lint turns warnings into failures; only info ("icon is recommended") may remain.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_manifest_validates_for_kubernetes_1_30(rendered):
    _, docs = rendered
    checked, skipped = [], []
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            skipped.append(doc["kind"])
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checked.append(doc["kind"])
    assert {"Deployment", "StatefulSet", "Service", "Job", "ConfigMap", "PodDisruptionBudget"} <= set(checked)
    assert set(skipped) <= {"ServiceMonitor"}


def test_validator_rejects_a_broken_manifest():
    # Guards the test above: a typo'd field must fail strict validation, not pass silently.
    deployment = next(d for d in render() if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_worker_replicas_equal_shards_and_shard_comes_from_the_ordinal(rendered):
    values, docs = rendered
    shards = values.get("worker", {}).get("shards", 1)
    sts = one(docs, "StatefulSet", f"{FULLNAME}-worker")
    assert sts["spec"]["replicas"] == shards
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    worker = sts["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"] == ["worker"]
    env = env_of(worker)
    assert env["DBFLEET_SHARD"]["value"] == "auto"
    assert env["DBFLEET_SHARD_COUNT"]["value"] == str(shards)
    assert env["DBFLEET_WORKER__METRICS_PORT"]["value"] == "9108"
    assert {"name": "metrics", "containerPort": 9108, "protocol": "TCP"} in worker["ports"]
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_resharding_rolls_every_worker():
    # SHARD_COUNT lives in the pod template, so a new shard count restarts all workers with it.
    three = one(render({"worker": {"shards": 3}}), "StatefulSet", f"{FULLNAME}-worker")
    five = one(render({"worker": {"shards": 5}}), "StatefulSet", f"{FULLNAME}-worker")
    assert three["spec"]["template"] != five["spec"]["template"]
    assert five["spec"]["replicas"] == 5


def test_migrations_run_as_pre_install_and_pre_upgrade_hook(rendered):
    _, docs = rendered
    job = one(docs, "Job", f"{FULLNAME}-migrate")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["migrate"]
    assert "DBFLEET_DATABASE_URL" in env_of(pod["containers"][0])


def test_pods_are_non_root_with_read_only_root_and_no_capabilities(rendered):
    _, docs = rendered
    specs = pod_specs(docs)
    assert len(specs) == 3
    for where, pod in specs.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["automountServiceAccountToken"] is False, where
        emptydirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and tmp[0]["name"] in emptydirs, where
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where


def test_api_probes_hit_healthz_and_readyz_on_8080(rendered):
    _, docs = rendered
    api = one(docs, "Deployment", f"{FULLNAME}-api")
    c = api["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["serve"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = env_of(c)
    assert env["DBFLEET_API__HOST"]["value"] == "0.0.0.0"
    assert env["DBFLEET_API__PORT"]["value"] == "8080"
    assert env["DBFLEET_API__WORKERS"]["value"] == "1"
    svc = one(docs, "Service", f"{FULLNAME}-api")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()


def test_store_url_comes_from_the_existing_secret_only():
    values = ci_values()
    docs = render(values)
    assert [d for d in docs if d["kind"] == "Secret"] == []
    for where, pod in pod_specs(docs).items():
        for c in pod["containers"]:
            ref = env_of(c)["DBFLEET_DATABASE_URL"]
            assert "value" not in ref, where
            assert ref["valueFrom"]["secretKeyRef"] == {"name": "dbfleet-db-credentials", "key": "database-url"}
    assert "postgresql" not in json.dumps(docs)


def test_default_values_reference_a_secret_the_chart_does_not_create():
    docs = render()
    assert [d for d in docs if d["kind"] == "Secret"] == []
    api = one(docs, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(api)["DBFLEET_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULLNAME}-database"
    assert f"create secret generic {FULLNAME}-database" in notes()


def test_a_given_url_lands_only_in_a_secret_created_before_the_migration_hook():
    docs = render({"database": {"url": SECRET_URL}})
    secret = one(docs, "Secret", f"{FULLNAME}-database")
    assert base64.b64decode(secret["data"]["database-url"]).decode() == SECRET_URL
    assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
    job = one(docs, "Job", f"{FULLNAME}-migrate")
    weight = int(secret["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    others = json.dumps([d for d in docs if d is not secret])
    assert "s3cr3t-sentinel-pw" not in others
    assert secret["data"]["database-url"] not in others


def test_existing_secret_and_url_together_are_refused():
    with pytest.raises(helm.HelmRenderError, match="not both"):
        render({"database": {"url": SECRET_URL, "existingSecret": "mine"}})


@pytest.mark.parametrize("values, where", [
    ({"worker": {"shards": 0}}, "/worker/shards"),
    ({"worker": {"shard": 2}}, "shard"),
    ({"config": {"database_url": SECRET_URL}}, "/config/database_url"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"database": {"url": "mysql://x@y/z"}}, "/database/url"),
])
def test_schema_rejects_bad_values(values, where):
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)


def test_config_map_is_mounted_where_dbfleet_config_points(rendered):
    values, docs = rendered
    cm = one(docs, "ConfigMap", f"{FULLNAME}-config")
    config = yaml.safe_load(cm["data"]["dbfleet.yaml"])
    # Helm merges user values over values.yaml, so the expected file is the merged `config`.
    assert config == helm.Chart.load(str(CHART_DIR)).merge_values(values)["config"]
    assert config["worker"]["concurrency"] == values.get("config", {}).get("worker", {}).get("concurrency", 32)
    for kind, name in (("Deployment", "api"), ("StatefulSet", "worker")):
        pod = one(docs, kind, f"{FULLNAME}-{name}")["spec"]["template"]["spec"]
        c = pod["containers"][0]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
        assert env_of(c)["DBFLEET_CONFIG"]["value"] == mount["mountPath"] + "/dbfleet.yaml"
        volume = next(v for v in pod["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == cm["metadata"]["name"]


def test_config_change_rolls_api_and_workers():
    def checksums(values: dict[str, Any]) -> list[str]:
        docs = render(values)
        return [one(docs, k, f"{FULLNAME}-{n}")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for k, n in (("Deployment", "api"), ("StatefulSet", "worker"))]
    before = checksums({})
    after = checksums({"config": {"worker": {"concurrency": 8}}})
    assert before[0] != after[0] and before[1] != after[1]


def test_disruption_budgets_select_their_pods(rendered):
    _, docs = rendered
    for kind, name in (("Deployment", "api"), ("StatefulSet", "worker")):
        pod_labels = one(docs, kind, f"{FULLNAME}-{name}")["spec"]["template"]["metadata"]["labels"]
        pdb = one(docs, "PodDisruptionBudget", f"{FULLNAME}-{name}")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    api_labels = one(docs, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["metadata"]["labels"]
    worker_pdb = one(docs, "PodDisruptionBudget", f"{FULLNAME}-worker")
    assert not worker_pdb["spec"]["selector"]["matchLabels"].items() <= api_labels.items()


def test_optional_objects_are_off_by_default():
    kinds = {d["kind"] for d in render()}
    assert "ServiceMonitor" not in kinds
    assert all(d["metadata"]["name"] != f"{FULLNAME}-dashboard" for d in render())


def test_service_monitors_scrape_api_and_every_worker():
    docs = render(ci_values())
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {f"{FULLNAME}-api", f"{FULLNAME}-worker"}
    for name, port_name in ((f"{FULLNAME}-api", "http"), (f"{FULLNAME}-worker", "metrics")):
        sm = monitors[name]
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        [endpoint] = sm["spec"]["endpoints"]
        assert endpoint == {"port": port_name, "path": "/metrics", "honorLabels": True,
                            "interval": "15s", "scrapeTimeout": "10s"}
        svc = one(docs, "Service", name)
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert port_name in {p["name"] for p in svc["spec"]["ports"]}
        assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"].get("namespace", "dbas")]


def test_dashboard_config_map_ships_the_docs_dashboard():
    docs = render(ci_values())
    cm = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    shipped = json.loads(cm["data"]["dbfleet.json"])
    assert shipped == json.loads((CHART_DIR / "dashboards" / "dbfleet.json").read_text())
    assert shipped["uid"] == "dbfleet-fleet"


def _apply_container_env(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The literal env a pod would get (Secret references aside), and no DBFLEET_* from this shell."""
    for name in [n for n in os.environ if n.startswith("DBFLEET_")]:
        monkeypatch.delenv(name)
    for name, entry in env_of(container).items():
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])


def test_rendered_worker_pods_resolve_their_shard_and_config_in_dbfleet(tmp_path, monkeypatch):
    # The chart and the app agree: the env and dbfleet.yaml a worker pod gets load into
    # dbfleet's Settings (extra keys forbidden), and pod ordinal i becomes shard i of N.
    from app.scheduler import resolve_shard
    from app.settings import Settings

    docs = render(ci_values())
    sts = one(docs, "StatefulSet", f"{FULLNAME}-worker")
    _apply_container_env(sts["spec"]["template"]["spec"]["containers"][0], monkeypatch)
    config = tmp_path / "dbfleet.yaml"
    config.write_text(one(docs, "ConfigMap", f"{FULLNAME}-config")["data"]["dbfleet.yaml"])
    monkeypatch.setenv("DBFLEET_CONFIG", str(config))  # where the pod has the ConfigMap mounted
    settings = Settings()
    assert settings.worker.concurrency == 64
    assert settings.collector("health").interval_s == 60
    assert settings.worker.metrics_port == 9108
    shards = [resolve_shard(settings, hostname=f"{sts['metadata']['name']}-{i}") for i in range(3)]
    assert [(s.index, s.count) for s in shards] == [(0, 3), (1, 3), (2, 3)]


def test_rendered_api_pod_listens_on_the_pod_network(monkeypatch):
    from app.settings import Settings

    api = one(render(), "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"][0]
    _apply_container_env(api, monkeypatch)
    monkeypatch.delenv("DBFLEET_CONFIG")  # the mounted file is tested with the workers above
    settings = Settings()
    assert (settings.api.host, settings.api.port, settings.api.workers) == ("0.0.0.0", 8080, 1)


def test_created_service_account_is_not_used_by_the_pre_install_hook():
    # The hook Job runs before the release's ServiceAccount exists; naming it would stall the Job.
    docs = render({"serviceAccount": {"create": True, "annotations": {"eks.amazonaws.com/role-arn": "arn:x"}}})
    sa = one(docs, "ServiceAccount", FULLNAME)
    kubernetes_validate.validate(sa, KUBE_VERSION, strict=True)
    specs = pod_specs(docs)
    assert specs[f"Deployment/{FULLNAME}-api"]["serviceAccountName"] == FULLNAME
    assert specs[f"StatefulSet/{FULLNAME}-worker"]["serviceAccountName"] == FULLNAME
    assert "serviceAccountName" not in specs[f"Job/{FULLNAME}-migrate"]
    named = pod_specs(render({"serviceAccount": {"create": True}, "migrations": {"serviceAccountName": "migrator"}}))
    assert named[f"Job/{FULLNAME}-migrate"]["serviceAccountName"] == "migrator"
