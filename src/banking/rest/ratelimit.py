"""Rate limits at the REST door: pure ASGI middleware for every ``/api`` request (per user, or
per client address before login) and a dependency on ``POST /api/v1/auth/token`` (per client
address and username, against password guessing). The counting is ``banking.cache.ratelimit``.

Every limited response carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (seconds); a refusal is 429 ``RATE_LIMITED`` with ``Retry-After``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banking.auth.tokens import TokenService
from banking.cache.ratelimit import SCOPE_DEFAULT, SCOPE_TOKEN, RateDecision, RateLimiter
from banking.domain.errors import RateLimited, Unauthenticated
from banking.observability.metrics import Metrics
from banking.rest.dependencies import ContainerDep
from banking.rest.errors import error_response

LIMITED_PATH_PREFIX = "/api/"
USERNAME_KEY_LENGTH_MAX = 150
_BEARER = "bearer "


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_seconds),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_seconds)
    return headers


def client_address(scope: Scope) -> str:
    """The caller's address: the direct peer, or behind a proxy in TRUSTED_PROXIES the address
    its X-Forwarded-For names (``middleware.ProxyHeadersMiddleware`` rewrote the scope); a
    header from any other peer never changes it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """Counts each ``/api`` request against the caller's limit; refuses past it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        tokens: TokenService,
        metrics: Metrics | None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.tokens = tokens
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        decision = await self.limiter.check(self._caller(scope), SCOPE_DEFAULT)
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            if self.metrics is not None:
                self.metrics.errors.labels(RateLimited.code).inc()
            response = error_response(
                RateLimited.code, "too many requests; retry later", headers=headers
            )
            await response(scope, receive, send)
            return
        extra = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(item for item in extra if item[0] not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _caller(self, scope: Scope) -> str:
        """``user:<subject>`` for a valid bearer token, else ``ip:<client address>`` (an invalid
        token counts against the address it comes from)."""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                text = value.decode("latin-1")
                if text[: len(_BEARER)].lower() == _BEARER:
                    try:
                        return f"user:{self.tokens.verify(text[len(_BEARER) :].strip()).user_id}"
                    except Unauthenticated:
                        break
                break
        return f"ip:{client_address(scope)}"


async def limit_password_guessing(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    container: ContainerDep,
) -> None:
    """``RATE_LIMIT_TOKEN`` per client address and username, checked before the password."""
    limiter = container.cache.rate_limiter
    if limiter is None:
        return
    username = form.username.strip().lower()[:USERNAME_KEY_LENGTH_MAX]
    decision = await limiter.check(f"{client_address(request.scope)}|{username}", SCOPE_TOKEN)
    if not decision.allowed:
        raise RateLimited(
            "too many sign-in attempts; retry later",
            retry_after_seconds=decision.retry_after_seconds,
            headers=rate_limit_headers(decision),
        )
