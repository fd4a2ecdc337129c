"""Fixtures for the Helm chart tests; the test modules skip themselves without helm-python-sdk."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module", params=["default", "shards"], ids=["default-values", "ci-shards-values"])
def rendered(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(values, rendered objects) for the chart's defaults and for ci/shards-values.yaml."""
    from helm_render import ci_values, render

    values = {} if request.param == "default" else ci_values()
    return values, render(values)
