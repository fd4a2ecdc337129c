"""Path and query parameters with their real constraints, so the OpenAPI document says what is accepted.

Ids are store bigints (1 .. 2**63-1: a larger one is a 422, not an overflow in PostgreSQL); names
follow the inventory's name rule; free text is bounded and never carries a NUL byte, which
PostgreSQL's text type cannot hold.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import StringConstraints

INT64_MAX = 2**63 - 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$"  # app/inventory/schemas.py's _NAME
WORD_PATTERN = r"^[A-Za-z0-9_.:\-]{1,200}$"  # collector and check names, receivers
TEXT_PATTERN = r"^[^\x00]*$"  # no NUL: PostgreSQL text cannot hold one
TAG_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-/]*=[^\x00;]*$"  # app/inventory/schemas.py's tag rule, as key=value
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

InstanceName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=200, description="the instance's name")]
ServerName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=200, description="the server's name")]
ReceiverName = Annotated[str, Path(pattern=WORD_PATTERN, max_length=200, description="a receiver in alerting.receivers")]


def object_id(what: str):
    """A store id in the path: a positive bigint."""
    return Annotated[int, Path(ge=1, le=INT64_MAX, description=f"the {what}'s id")]


FindingId = object_id("finding")
SweepId = object_id("sweep")
KeyId = object_id("API key")
SilenceId = Annotated[str, Path(pattern=UUID_PATTERN, max_length=36, description="the silence's id (a UUID)")]

InstanceFilter = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=200, description="an instance name")]
ServerFilter = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=200,
                                           description="only the entries of this server")]
WordFilter = Annotated[str | None, Query(pattern=WORD_PATTERN, max_length=200)]
TagSelector = Annotated[str, StringConstraints(pattern=TAG_PATTERN, max_length=500)]
TagSelectors = Annotated[list[TagSelector] | None, Query(description="key=value, repeatable")]
