"""The Grafana dashboard queries only metrics dbfleet exports, with labels those metrics have."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART_COPY = ROOT / "helm" / "dbfleet" / "dashboards" / "dbfleet.json"
DOCS_COPY = ROOT / "docs" / "grafana" / "dbfleet-dashboard.json"

# Sample-name suffixes each metric type exposes. `_created` is prometheus_client bookkeeping,
# not something a dashboard should chart.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"), "info": ("_info",), "untyped": ("",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}
# What each part of issue 6's dashboard must chart.
REQUIRED_FAMILIES = {
    "fleet overview": "dbfleet_instance_up",
    "lagging replicas": "dbfleet_replication_lag_seconds",
    "failing collectors": "dbfleet_collector_runs",
    "findings trend": "dbfleet_findings_open",
    "sweep duration": "dbfleet_sweep_duration_seconds",
    "outbox pending": "dbfleet_outbox_pending",
    "notification failures": "dbfleet_notification_failures",
}


def exported() -> dict[str, tuple[str, set[str]]]:
    """sample name -> (family name, label names) for everything app.telemetry registers."""
    from app import telemetry
    families = {f.name: f.type for f in telemetry.REGISTRY.collect()}
    # Label names are not in an empty family; read them from the metric objects themselves.
    labels = {m._name: set(m._labelnames) for m in vars(telemetry).values()
              if hasattr(m, "_labelnames") and hasattr(m, "_name")}
    samples = {}
    for family, kind in families.items():
        for suffix in SUFFIXES[kind]:
            extra = {"le"} if suffix == "_bucket" else set()
            samples[family + suffix] = (family, labels.get(family, set()) | extra)
    return samples


def strip_noise(expr: str) -> str:
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)   # string literals
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)                          # Grafana variables
    expr = re.sub(r"\[[^\]]*\]", "", expr)                                  # range selectors
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every vector selector in a PromQL expression."""
    expr = strip_noise(expr)
    found = []
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?", expr):
        name, matchers = m.group(1), m.group(2) or ""
        if not matchers and expr[m.end():].lstrip().startswith("("):
            continue  # a function or aggregation call
        if name.lower() in PROMQL_WORDS:
            continue
        found.append((name, set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))))
    return found


def grafana_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating query."""
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # label_values(<selector>, <label>): only the selector is PromQL.
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
        assert m, f"variable {var['name']}: unsupported query {query!r}"
        yield f"variable {var['name']}", m.group(1)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(CHART_COPY.read_text())


@pytest.mark.parametrize("expr, expected", [
    ('sum by (le, collector) (rate(dbfleet_x_bucket{status=~"a|b"}[$__rate_interval]))',
     [("dbfleet_x_bucket", {"status"})]),
    ('count(max by (instance) (up{engine=~"$engine"}) == 0) or vector(0)', [("up", {"engine"})]),
    ("histogram_quantile(0.95, sum(rate(a_bucket[5m])) by (le)) / b offset 1h", [("a_bucket", set()), ("b", set())]),
    ('topk(10, m{job="api", instance!="x"}) > 1e3', [("m", {"job", "instance"})]),
])
def test_selector_parser(expr, expected):
    assert selectors(expr) == expected


def test_every_query_uses_exported_metrics_and_their_labels(dashboard):
    samples = exported()
    used = set()
    queries = list(grafana_queries(dashboard))
    assert len(queries) > 20
    for where, expr in queries:
        found = selectors(expr)
        assert found, f"{where}: no metric in {expr!r}"
        for name, label_names in found:
            assert name in samples, f"{where}: {name} is not exported by dbfleet ({expr!r})"
            family, allowed = samples[name]
            assert label_names <= allowed, f"{where}: {name} has no label(s) {label_names - allowed}"
            used.add(family)
    missing = {part: family for part, family in REQUIRED_FAMILIES.items() if family not in used}
    assert not missing, f"dashboard parts without their metric: {missing}"


def test_panels_are_well_formed(dashboard):
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "engine", "instance"} <= names
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36


def test_docs_copy_is_the_chart_copy():
    assert DOCS_COPY.read_bytes() == CHART_COPY.read_bytes()
