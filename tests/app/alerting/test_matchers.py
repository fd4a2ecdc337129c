import pytest

from app.alerting.matchers import parse_matcher

CASES = [
    ('alertname="replication_lag"', {"alertname": "replication_lag"}, True),
    ("alertname=replication_lag", {"alertname": "bloat"}, False),
    ("env!=prod", {"env": "dev"}, True),
    ("env!=prod", {"env": "prod"}, False),
    ("env!=prod", {}, True),  # a missing label is the empty string
    ('instance=~"db[0-9]+"', {"instance": "db12"}, True),
    ('instance=~"db[0-9]+"', {"instance": "xdb12"}, False),  # anchored
    ("instance!~db.*", {"instance": "web1"}, True),
    ("instance!~db.*", {"instance": "db1"}, False),
    ('team=""', {}, True),
    ('comment="a=b"', {"comment": "a=b"}, True),
]


@pytest.mark.parametrize("text,labels,expected", CASES)
def test_matcher(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["=x", "a==", "a=~(", "9a=b", "a~b"])
def test_bad_matchers_are_rejected(text):
    if text == "a==":
        assert parse_matcher(text).value == "="  # `a` equals "=": odd but valid, as in Alertmanager
        return
    with pytest.raises(ValueError):
        parse_matcher(text)
