"""Inhibition: instance_unreachable mutes every other alert on that instance, never itself."""

import pytest

from app.alerting.config import InhibitRule
from app.alerting.pipeline.inhibit import Inhibitor

RULE = InhibitRule(source_matchers=["alertname=instance_unreachable"],
                   target_matchers=["alertname!=instance_unreachable"], equal=["instance"])
CRITICAL_OVER_WARNING = InhibitRule(source_matchers=["severity=critical"], target_matchers=["severity=warning"],
                                    equal=["alertname", "instance"])


@pytest.fixture
def inhibitor() -> Inhibitor:
    i = Inhibitor([RULE, CRITICAL_OVER_WARNING])
    i.add_source("u1", {"alertname": "instance_unreachable", "instance": "db1", "severity": "critical"})
    i.add_source("l1", {"alertname": "replication_lag", "instance": "db2", "severity": "critical"})
    return i


CASES = [
    ("other alert on the unreachable instance", "x", {"alertname": "bloat", "instance": "db1"}, ["u1"]),
    ("same alert on another instance", "y", {"alertname": "bloat", "instance": "db3"}, []),
    ("the source does not inhibit itself", "u1", {"alertname": "instance_unreachable", "instance": "db1"}, []),
    ("warning under a critical of the same name", "w", {"alertname": "replication_lag", "instance": "db2",
                                                         "severity": "warning"}, ["l1"]),
    ("critical is not a target", "c", {"alertname": "replication_lag", "instance": "db2",
                                       "severity": "critical"}, []),
]


@pytest.mark.parametrize("why,fp,labels,by", CASES, ids=[c[0] for c in CASES])
def test_inhibited_by(inhibitor, why, fp, labels, by):
    assert inhibitor.inhibited_by(fp, labels) == by
