"""Config validation: every error with its path; cross-references checked."""

from datetime import timedelta

import pytest

from app.alerting.config import ConfigError, check_config, load_config, parse_duration

WEBHOOK = {"type": "webhook", "name": "ops", "url": "http://127.0.0.1:9/hook"}


def test_a_valid_config_loads_with_defaults():
    cfg = load_config({"route": {"receiver": "ops"}, "receivers": [WEBHOOK],
                       "inhibit_rules": [{"source_matchers": ["alertname=instance_unreachable"],
                                          "target_matchers": ["alertname!=instance_unreachable"],
                                          "equal": ["instance"]}]})
    assert cfg.receivers[0].send_resolved is True
    assert cfg.silence_reminder.after == timedelta(hours=4)


def test_every_error_is_reported_with_its_path():
    errors = check_config({
        "route": {"receiver": "nobody", "group_wait": "soon", "matchers": ["a=b"],
                  "routes": [{"matchers": ["x=~("]}, {"receiver": "ops", "mute_time_intervals": ["weekend"]}]},
        "receivers": [WEBHOOK, {"type": "pagerduty", "name": "pd"}, {"type": "carrier_pigeon", "name": "p"}],
        "time_intervals": [{"name": "nights", "time_intervals": [{"times": [{"start_time": "25:00",
                                                                              "end_time": "06:00"}]}]}],
    })
    joined = "\n".join(errors)
    assert "alerting.route.group_wait" in joined
    assert "alerting.route.routes[0].matchers" in joined
    assert "alerting.receivers[1].pagerduty.routing_key_ref" in joined
    assert "alerting.receivers[2]" in joined and "carrier_pigeon" in joined
    assert "alerting.time_intervals[0].time_intervals[0].times[0].start_time" in joined


def test_cross_references_are_checked_once_the_shape_is_valid():
    errors = check_config({
        "route": {"receiver": "nobody", "matchers": ["a=b"],
                  "routes": [{"receiver": "ops", "mute_time_intervals": ["weekend"]}]},
        "receivers": [WEBHOOK, WEBHOOK],
    })
    assert "alerting.route.matchers: the root route must not have matchers (it catches every alert)" in errors
    assert "alerting.route.receiver: unknown receiver 'nobody'" in errors
    assert "alerting.route.routes[0].mute_time_intervals[0]: unknown time interval 'weekend'" in errors
    assert "alerting.receivers[1].name: duplicate receiver 'ops'" in errors
    with pytest.raises(ConfigError):
        load_config({"route": {"receiver": "nobody"}})


@pytest.mark.parametrize("text,expected", [("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400),
                                           ("1h30m", 5400), (90, 90)])
def test_durations(text, expected):
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "-1s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_documented_example_is_valid():
    import yaml

    import app.alerting.config as module

    example = yaml.safe_load(module.__doc__.split("\n", 2)[2])["alerting"]
    assert check_config(example) == []
    assert len(load_config(example).receivers) == 6
