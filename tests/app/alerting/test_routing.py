"""The routing tree, table-driven: matchers, continue, inheritance, the fall-back to the parent."""

from datetime import timedelta

import pytest

from app.alerting.config import load_config
from app.alerting.routing import RoutingTree

CONFIG = {
    "route": {
        "receiver": "default", "group_by": ["alertname"], "group_wait": "30s", "repeat_interval": "4h",
        "routes": [
            {"matchers": ["severity=critical"], "receiver": "pager", "continue": True, "group_wait": "10s"},
            {"matchers": ['team=~"payments|billing"'], "receiver": "payments-slack",
             "group_by": ["alertname", "instance"],
             "routes": [{"matchers": ["env!=prod"], "receiver": "dev-null-ish", "repeat_interval": "1d"}]},
            {"matchers": ["engine=mysql"], "receiver": "mysql-team"},
            {"matchers": ["engine=~my.*"], "receiver": "never-reached"},  # the previous sibling wins
        ],
    },
    "receivers": [{"type": "webhook", "name": n, "url": "http://127.0.0.1:9/"}
                  for n in ("default", "pager", "payments-slack", "dev-null-ish", "mysql-team", "never-reached")],
}

CASES = [
    ("no child matches: stays at the root", {"alertname": "bloat", "engine": "postgres"}, ["default"]),
    ("critical continues to the next matching sibling", {"severity": "critical", "team": "payments", "env": "prod"},
     ["pager", "payments-slack"]),
    ("critical with no other match: only the pager", {"severity": "critical", "engine": "postgres"}, ["pager"]),
    ("nested child wins over its parent", {"team": "billing", "env": "dev"}, ["dev-null-ish"]),
    ("nested child does not match: the parent keeps it", {"team": "billing", "env": "prod"}, ["payments-slack"]),
    ("first matching sibling without continue stops", {"engine": "mysql"}, ["mysql-team"]),
    ("regex is anchored", {"team": "payments-eu"}, ["default"]),
]


@pytest.fixture(scope="module")
def tree() -> RoutingTree:
    return RoutingTree(load_config(CONFIG))


@pytest.mark.parametrize("why,labels,receivers", CASES, ids=[c[0] for c in CASES])
def test_receivers(tree, why, labels, receivers):
    assert tree.receivers(labels) == receivers


INHERITANCE = [
    # route id, group_by, group_wait, repeat_interval
    ("0", ["alertname"], timedelta(seconds=30), timedelta(hours=4)),
    ("0.0", ["alertname"], timedelta(seconds=10), timedelta(hours=4)),
    ("0.1", ["alertname", "instance"], timedelta(seconds=30), timedelta(hours=4)),
    ("0.1.0", ["alertname", "instance"], timedelta(seconds=30), timedelta(days=1)),
]


@pytest.mark.parametrize("route_id,group_by,group_wait,repeat", INHERITANCE)
def test_children_inherit_options(tree, route_id, group_by, group_wait, repeat):
    route = tree.by_id[route_id]
    assert (route.group_by, route.group_wait, route.repeat_interval) == (group_by, group_wait, repeat)
    assert route.group_interval == timedelta(minutes=5)  # Alertmanager's default, inherited


def test_group_key_separates_routes_and_label_values(tree):
    a = {"alertname": "lag", "severity": "critical", "team": "payments", "instance": "db1", "env": "prod"}
    b = {**a, "instance": "db2"}
    pager, slack = tree.match(a)
    assert pager.group_key(a) == pager.group_key(b)  # pager groups by alertname only
    assert slack.group_key(a) != slack.group_key(b)  # payments groups by instance too
    assert pager.group_key(a) != slack.group_key(a)  # same labels, different route


def test_group_by_all_labels():
    tree = RoutingTree(load_config({"route": {"receiver": "null", "group_by": ["..."]}}))
    assert tree.root.group_labels({"a": "1", "b": "2"}) == {"a": "1", "b": "2"}
