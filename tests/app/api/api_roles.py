"""Which role each documented API operation needs, read from the routes' own dependencies."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator

from app.auth import Role
from app.main import ROUTERS


def required_role(route) -> Role:
    """The role app.api.deps.require() admits, read from the route's dependencies (viewer if none)."""
    roles = [Role.viewer]
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if getattr(dep.call, "__qualname__", "") == "require.<locals>.check":
            roles.append(inspect.getclosurevars(dep.call).nonlocals["role"])
        stack.extend(dep.dependencies)
    return max(roles)


def api_routes() -> Iterator[tuple[str, object]]:
    """("METHOD /path" as the document names it, route) for every documented route."""
    for module in ROUTERS:
        for route in module.router.routes:
            if not route.include_in_schema:
                continue
            path = re.sub(r":\w+}", "}", route.path)  # {finding_id:int} is {finding_id} in the document
            for method in sorted(route.methods):
                yield f"{method} {path}", route


def needing(role: Role) -> list[str]:
    """The operations a key below `role` is refused."""
    return sorted(label for label, route in api_routes() if required_role(route) >= role)
