"""The console's errors as pages: a refused action (403), an unknown instance or finding (404)
or a bad filter (422) is an HTML page a DBA can read and leave, not the API's JSON problem."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute


class ConsoleRoute(APIRoute):
    """A console route: an HTTPException raised by it or its dependencies becomes an HTML page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as e:
                if e.status_code < 400:  # sign in first: 303 to the form
                    return RedirectResponse((e.headers or {}).get("Location", "/signin"), status_code=e.status_code)
                return error_page(request, e.status_code, e.detail if isinstance(e.detail, str) else None)
            except RequestValidationError as e:  # the field, never the value sent
                return error_page(request, 422, "; ".join(
                    f"{'.'.join(map(str, x.get('loc', ())[1:]))}: {x.get('msg', '')}" for x in e.errors()[:5]))

        return console_handler


def error_page(request: Request, status: int, detail: str | None) -> Response:
    from app.web.pages import templates

    return templates.TemplateResponse(request, "error.html", {
        "user": None, "status": status, "phrase": HTTPStatus(status).phrase,
        "detail": detail or HTTPStatus(status).description}, status_code=status)
