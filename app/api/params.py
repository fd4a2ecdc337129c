"""Path and query parameters with their real constraints, so the OpenAPI document says what is accepted.

Ids are store bigints (1 .. 2**63-1: a larger one is a 422, not an overflow in PostgreSQL); names
follow the inventory's name rule; free text is bounded and never carries a NUL byte, which
PostgreSQL's text type cannot hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Body, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BeforeValidator, Field, StringConstraints, TypeAdapter, ValidationError

INT64_MAX = 2**63 - 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$"  # app/inventory/schemas.py's _NAME
WORD_PATTERN = r"^[A-Za-z0-9_.:\-]{1,200}$"  # collector and check names, receivers
TEXT_PATTERN = r"^[^\x00]*$"  # no NUL: PostgreSQL text cannot hold one
TAG_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-/]*=[^\x00;]*$"  # app/inventory/schemas.py's tag rule, as key=value
MATCHER_PATTERN = r"^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)[^\x00]*$"  # app/alerting/matchers.py's form
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

InstanceName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=200, description="the instance's name")]
ServerName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=200, description="the server's name")]
ReceiverName = Annotated[str, Path(pattern=WORD_PATTERN, max_length=200,
                                   description="a receiver in alerting.receivers")]


INT32_MAX = 2**31 - 1


def object_id(what: str, maximum: int = INT64_MAX):
    """A store id in the path: positive, within its column's type (bigint, or integer)."""
    return Annotated[int, Path(ge=1, le=maximum, description=f"the {what}'s id")]


FindingId = object_id("finding")
SweepId = object_id("sweep")
KeyId = object_id("API key", INT32_MAX)
SessionId = Annotated[int, Path(ge=1, le=INT64_MAX, description="the session's id on the server (PostgreSQL pid, "
                                                           "MySQL connection id)")]
SilenceId = Annotated[str, Path(pattern=UUID_PATTERN, max_length=36, description="the silence's id (a UUID)")]

InstanceFilter = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=200, description="an instance name")]
ServerFilter = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=200,
                                           description="only the entries of this server")]
WordFilter = Annotated[str | None, Query(pattern=WORD_PATTERN, max_length=200)]
TagSelector = Annotated[str, StringConstraints(pattern=TAG_PATTERN, max_length=500)]
TagSelectors = Annotated[list[TagSelector] | None, Query(description="key=value, repeatable")]


def text(max_length: int, min_length: int = 0):
    """Body text for the store: bounded, no NUL."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length, pattern=TEXT_PATTERN)]


Note = text(2000)
# schema.table (or a bare table): unquoted identifiers, as partition policies name them
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,127}"
TableName = Annotated[str, StringConstraints(max_length=400, pattern=rf"^({IDENTIFIER}\.)?{IDENTIFIER}$")]
Matcher = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=MATCHER_PATTERN)]
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(v: Any) -> Any:
    """Only an RFC 3339 date-time, as the document's format says: pydantic alone would also take
    a number of seconds since 1970 or a date without a time zone."""
    if isinstance(v, str):
        if not RFC3339.match(v):
            raise ValueError("must be an RFC 3339 date-time with a time zone, e.g. 2026-12-01T18:00:00Z")
        try:  # microseconds are Python's precision; a datetime on, as strict mode takes no text after this
            return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", v.upper()))
        except ValueError:
            raise ValueError("is not a date-time that exists (month 1-12, day of the month, hour 0-23)") from None
    if isinstance(v, (int, float)):
        raise ValueError("must be an RFC 3339 date-time text, not a number")  # noqa: TRY004 (pydantic wants ValueError)
    return v


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
Since = Annotated[Timestamp | None, Query(description="from this time, with a time zone (RFC 3339)")]
Until = Annotated[Timestamp | None, Query(description="until this time, with a time zone (default now)")]


# An optional body documented as its object alone (not "object or null"): leave it out, or send an
# object; StrictJsonRoute refuses a JSON null.
T = TypeVar("T")
OptionalBody = Annotated[T, Body()]


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is also validated as JSON Schema reads it: `0` is not `false` and
    `"5"` is not `5`. FastAPI validates the parsed body in pydantic's lax mode, which would accept
    what the OpenAPI document refuses; strict JSON mode still reads RFC 3339 text as a time.

    The errors are kept on the request and raised by the role check (app.api.deps.require), so a
    missing key is still a 401 and a viewer's write a 403 before the body is looked at."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        info = self.body_field.field_info  # its metadata too: a discriminator lives there, not in the type
        metadata = [*info.metadata, *([Field(discriminator=info.discriminator)] if info.discriminator else [])]
        adapter = TypeAdapter(Annotated[(info.annotation, *metadata)] if metadata else info.annotation)

        async def strict_handler(request: Request) -> Response:
            raw = await request.body()
            if raw.strip() and request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
                try:
                    adapter.validate_json(raw, strict=True)
                except ValidationError as e:
                    request.state.body_errors = [{**err, "loc": ("body", *err["loc"])}
                                                 for err in e.errors(include_input=False)]
            return await handler(request)

        return strict_handler


def refuse_invalid_body(request: Request) -> None:
    """Raise the strict body errors StrictJsonRoute found (called once the caller is admitted)."""
    if errors := getattr(request.state, "body_errors", None):
        raise RequestValidationError(errors)
