"""JWT access tokens (PyJWT). Only the configured algorithm is accepted: never ``none``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jwt

from banking.domain.errors import Unauthenticated
from banking.domain.roles import Actor, Role

VERIFIED_TOKENS_REMEMBERED_MAX = 10_000
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss", "role", "username"]


class TokenService:
    def __init__(
        self, *, secret: str, algorithm: str, audience: str, issuer: str, expire_minutes: int
    ) -> None:
        if algorithm.lower() == "none":
            raise ValueError("JWT algorithm 'none' is not allowed")
        self._secret = secret
        self._algorithm = algorithm
        self._audience = audience
        self._issuer = issuer
        self.expire_seconds = expire_minutes * 60
        self._verified: dict[str, tuple[Actor, float]] = {}

    def issue(self, user_id: UUID, username: str, role: Role) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "username": username,
            "role": role.value,
            "aud": self._audience,
            "iss": self._issuer,
            "iat": now,
            "exp": now + timedelta(seconds=self.expire_seconds),
            "jti": str(uuid4()),
        }
        return jwt.encode(claims, self._secret, algorithm=self._algorithm)

    def verify(self, token: str) -> Actor:
        """The actor a valid token names; ``Unauthenticated`` for anything else.

        Tokens already verified are remembered until they expire (bounded), so a client that
        reuses its token, and the rate limiter and the route that both need the caller, pay
        for the signature check once."""
        remembered = self._verified.get(token)
        if remembered is not None:
            actor, expires_at = remembered
            if time.time() < expires_at:
                return actor
            del self._verified[token]
        actor, expires_at = self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS_REMEMBERED_MAX:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (actor, expires_at)
        return actor

    def _verify(self, token: str) -> tuple[Actor, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": _REQUIRED_CLAIMS},
            )
            actor = Actor(
                user_id=UUID(claims["sub"]),
                username=str(claims["username"]),
                role=Role(claims["role"]),
            )
            return actor, float(claims["exp"])
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("token has expired") from error
        except (jwt.PyJWTError, ValueError, KeyError) as error:
            raise Unauthenticated("token is not valid") from error
