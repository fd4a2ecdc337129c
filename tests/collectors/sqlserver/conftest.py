"""Recorded SQL Server rows (tests/collectors/fixtures/sqlserver) and a context builder."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from collectors.spec import Context
from tests.collectors.spec_context import merged, spec_named

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sqlserver"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def context(scenario: dict, collector: str, **extra) -> Context:
    part = scenario.get(collector, {})
    return Context(instance="mssql-prod-1", engine="sqlserver", server_version=16_004_135,
                   thresholds=merged(spec_named("sqlserver", collector), {**part.get("thresholds", {}), **extra}),
                   now=datetime.fromisoformat(scenario["now"]), previous=part.get("previous"))


@pytest.fixture(scope="session")
def planted() -> dict:
    return load("planted")


@pytest.fixture(scope="session")
def clean() -> dict:
    return load("clean")
