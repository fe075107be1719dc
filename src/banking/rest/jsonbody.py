"""Exact JSON bodies: numbers keep their original text, so an amount never passes through float.

FastAPI parses bodies with ``request.json()``; this route class gives it a request whose
``json()`` keeps each JSON number with a fraction or exponent as its lexeme (``JSONNumber``),
integers as ``int``, and refuses ``NaN``/``Infinity``. ``banking.domain.money.parse_amount``
then decides, from the exact text, whether the number is an acceptable amount.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class JSONNumber(str):
    """The exact text of a JSON number with a fraction or exponent, such as ``100.10``."""

    __slots__ = ()


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a valid JSON value", name, 0)


def loads_exact(body: bytes) -> Any:
    return json.loads(body, parse_float=JSONNumber, parse_constant=_refuse_constant)


class ExactJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_exact(await self.body())
        return self._json


class ExactJSONRoute(APIRoute):
    """Route class for every router that takes a JSON body with amounts."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            return await handler(ExactJSONRequest(request.scope, request.receive))

        return exact_handler
