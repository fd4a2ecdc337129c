"""A connection that answers with recorded rows, for the engines no server can run here (SQL Server,
Oracle): the collector's and the live API's own code runs on it, only the driver is replaced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(engine: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / engine / f"{name}.json").read_text())


class RecordedConnection:
    """fetch() answers the first recorded (marker, rows) whose marker the SQL contains; what was sent is kept."""

    def __init__(self, engine: str, server_version: int, answers: list[tuple[str, list[dict[str, Any]]]],
                 **extra: Any):
        self.engine, self.server_version, self.is_standby = engine, server_version, False
        self.answers, self.sent, self.closed = answers, [], False
        for name, value in extra.items():  # engine-specific methods (showplan_xml, explain_plan, execute)
            setattr(self, name, value)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        self.sent.append((sql, args))
        for marker, rows in self.answers:
            if marker in sql:
                return [dict(r) for r in rows]
        raise AssertionError(f"no recorded answer for: {sql[:120]}")

    async def execute(self, sql: str) -> None:
        self.sent.append((sql, ()))

    async def close(self) -> None:
        self.closed = True
