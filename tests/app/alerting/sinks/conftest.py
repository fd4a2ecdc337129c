"""Fixtures for the sink tests."""

from __future__ import annotations

import pytest
from alerting_helpers import make_notification as _make


@pytest.fixture
def make_notification():
    return _make
