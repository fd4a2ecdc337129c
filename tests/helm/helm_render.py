"""Helpers for the chart tests: render helm/dbfleet with Helm's own engine (helm-python-sdk), offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "dbfleet"
CI_VALUES = CHART_DIR / "ci" / "shards-values.yaml"
KUBE_VERSION = "v1.30.0"
RELEASE = "fleet"
NAMESPACE = "dbas"


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for these values, NOTES.txt aside."""
    chart = helm.Chart.load(str(CHART_DIR))
    rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def notes(values: dict[str, Any] | None = None) -> str:
    chart = helm.Chart.load(str(CHART_DIR))
    rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def ci_values() -> dict[str, Any]:
    return yaml.safe_load(CI_VALUES.read_text())


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, got {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """kind/name -> pod spec for every workload the chart renders."""
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}
