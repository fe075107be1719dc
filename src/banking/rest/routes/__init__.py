"""REST routers, one per resource, and the route class they share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from banking.rest.jsonbody import ExactJSONRoute


def methods_by_path(routes: Iterable[object]) -> dict[str, frozenset[str]]:
    """Every method each path template answers, over all the routes that share it (one route
    per method): what ``Allow`` lists on a 405."""
    found: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, APIRoute):
            found.setdefault(route.path_format, set()).update(route.methods or ())
    return {path: frozenset(methods) for path, methods in found.items()}


class Route(ExactJSONRoute):
    """A route whose path parameters never capture a path that another route spells out.

    Starlette picks the first route that matches both path and method, so ``GET
    /transactions/credit`` would be served by ``GET /transactions/{transaction_id}`` with the id
    ``credit`` (a 422), although ``/transactions/credit`` is a path of its own that only takes
    POST: the right answer is 405 with ``Allow: POST``. The literal paths are the app's
    ``state.methods_by_path`` keys (``banking.rest.app``)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE and self.param_convertors:
            app = scope.get("app")
            table: Mapping[str, frozenset[str]] = getattr(
                getattr(app, "state", None), "methods_by_path", {}
            )
            path: str = scope["path"]
            root_path: str = scope.get("root_path", "")
            if root_path and path.startswith(root_path):  # behind a proxy's prefix
                path = path[len(root_path) :]
            if "{" not in path and path in table:  # a literal path of another route
                return Match.NONE, {}
        return match, child_scope
