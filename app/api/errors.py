"""The API's one error body, RFC 9457 problem details, and the `responses=` each route declares.

Every 4xx/5xx the JSON API sends, an HTTPException, a request validation error (422) or an
unexpected 500, is a `Problem` served as application/problem+json: `detail` is one sentence for a
person, `errors` names each wrong field (`loc`, `msg`, `type`) or inventory-file line. Input
values are never echoed: a DBA who pastes a password where a credential reference belongs must
not get it back in the response (or in a proxy's log of it).

Routes declare what they can answer with `responses=errors.responses(404, 409)` on top of the
role's set (`VIEWER`, `OPERATOR`, `ADMIN`); `UNREACHABLE` is for routes that talk to a monitored
database now.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger(__name__)


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query, path or header, then the field's path; "
                                             "for an inventory file, body then the line")
    msg: str = Field(description="what is wrong with it (the value itself is never repeated)")
    type: str = Field(description="a stable word for the kind of error, e.g. missing, string_too_long")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field("about:blank", description="always about:blank: the status and title say the kind")
    title: str = Field(description="the HTTP status phrase", examples=["Not Found"])
    status: int = Field(ge=400, le=599, description="the HTTP status code, repeated")
    detail: str = Field(description="what went wrong, for a person", examples=["no instance named 'db1'"])
    errors: list[FieldError] = Field(default_factory=list, description="each wrong field or file line")


class ApiError(HTTPException):
    """An HTTPException that can also name the wrong fields or inventory-file lines."""

    def __init__(self, status_code: int, detail: str, errors: Iterable[dict[str, Any]] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, detail, headers=headers)
        self.errors = [FieldError.model_validate(e) for e in errors]


def line_errors(status_code: int, summary: str, lines: Sequence[str], kind: str) -> ApiError:
    """An inventory file refused whole: one error per message ("line 3: port: ...")."""
    return ApiError(status_code, f"{summary}: {lines[0]}" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""),
                    [{"loc": ["body"], "msg": m, "type": kind} for m in lines])


DESCRIPTIONS = {
    400: "the body is not what this route reads (not JSON, not UTF-8 text)",
    401: "no API key, or an unknown or revoked one (or a bad webhook signature)",
    403: "the key's role may not do this, or a setting turns it off",
    404: "no such object",
    409: "the object's state conflicts with the request",
    413: "the body is too large",
    422: "a parameter or body field is wrong; `errors` names each one",
    429: "too many requests; see Retry-After",
    502: "the monitored database (or receiver) refused or failed; `detail` says why",
    503: "a credential or service this needs is unavailable now; `detail` says why",
    504: "the monitored database did not answer in time",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for these error statuses, each with the Problem schema."""
    return {code: {"model": Problem, "description": DESCRIPTIONS[code]} for code in codes}


VIEWER = responses(401, 422)  # any key may call it; parameters are validated
OPERATOR = responses(401, 403, 422)  # a viewer key is refused
ADMIN = OPERATOR  # a viewer or operator key is refused
UNREACHABLE = responses(502, 503, 504)


def problem(status_code: int, detail: str, errors: Iterable[FieldError | dict[str, Any]] = (),
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=HTTPStatus(status_code).phrase, status=status_code, detail=detail,
                   errors=[e if isinstance(e, FieldError) else FieldError.model_validate(e) for e in errors])
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=headers,
                        media_type=PROBLEM_MEDIA_TYPE)


def _where(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc) or "request"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each wrong field's path and message, and never its value."""
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    detail = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors[:5]) or "the request is not valid"
    if len(errors) > 5:
        detail += f" (and {len(errors) - 5} more)"
    return problem(422, detail, errors)


async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
    if exc.status_code < 400:  # the console's redirects (303 to /signin) stay as they are
        return await http_exception_handler(request, exc)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405 and (methods := allowed_methods(request)):
        headers = {**(headers or {}), "Allow": ", ".join(methods)}
    return problem(exc.status_code, detail, getattr(exc, "errors", ()), headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the document lists for this path: Starlette's 405 names only the first
    matching route's (GET /instances/{name} hides its PATCH and DELETE)."""
    path = request.scope["path"]
    return sorted({m for pattern, methods in _path_methods(request.app) if pattern.match(path) for m in methods})


def _path_methods(app: FastAPI) -> list[tuple[re.Pattern[str], set[str]]]:
    """The document's paths as regexes (an integer parameter matches digits only) with their methods."""
    cached = getattr(app.state, "path_methods", None)
    if cached is None:
        cached = []
        for template, operations in app.openapi().get("paths", {}).items():
            integers = {p["name"] for op in operations.values() for p in op.get("parameters", [])
                        if p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"}
            regex = re.sub(r"\\\{(\w+)\\\}", lambda m, ints=integers: "[0-9]+" if m.group(1) in ints else "[^/]+",
                           re.escape(template))
            cached.append((re.compile(f"^{regex}$"), {m.upper() for m in operations}))
        app.state.path_methods = cached
    return cached


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug is still a problem document; the exception goes to the log, not to the client."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error; the server log has the details")


def _document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Error responses are documented as application/problem+json, which is what they are sent as;
    every route that reads a JSON body can answer 400 to one that is not JSON (FastAPI's own answer)."""
    for path in document.get("paths", {}).values():
        for operation in path.values():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                operation["responses"].setdefault("400", {
                    "description": "the body is not JSON",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if code[:1] in "45" and schema.get("$ref", "").endswith("/Problem"):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return document


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a Problem, and document them as such."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_error)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
