"""JWT access tokens (PyJWT), signed with the key ring's signing key and ``kid`` in the header.

Verification picks the key by ``kid`` and accepts only the configured algorithm: never
``none``, and never another family (an HS256 token "signed" with a public key as its secret
is refused where EdDSA or RS256 is configured, and the other way round). Then the token's user
is looked up as they are now (``CurrentUsers``): deactivated users are refused and role
changes apply within ``TOKEN_USER_RECHECK_SECONDS``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jwt
from jwt.types import JWKDict

from banking.auth.current_users import CurrentUsers
from banking.auth.keys import KeyRing
from banking.domain.errors import Unauthenticated
from banking.domain.roles import Actor, Role

VERIFIED_TOKENS_REMEMBERED_MAX = 10_000
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss", "role", "username"]


class TokenService:
    def __init__(
        self,
        *,
        keys: KeyRing,
        audience: str,
        issuer: str,
        expire_minutes: int,
        current_users: CurrentUsers,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._current_users = current_users
        self.expire_seconds = expire_minutes * 60
        self._verified: dict[str, tuple[Actor, float]] = {}

    @property
    def issues(self) -> bool:
        """Whether this process signs tokens (False where it holds public keys only)."""
        return self._keys.issues

    def require_issuer(self) -> None:
        """``ServiceUnavailable`` where this process holds no signing key (it only verifies)."""
        self._keys.signing_key()

    def issue(self, user_id: UUID, username: str, role: Role) -> str:
        kid, key = self._keys.signing_key()
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
        return jwt.encode(claims, key, algorithm=self._keys.algorithm, headers={"kid": kid})

    async def authenticate(self, token: str) -> Actor:
        """The actor behind a bearer token, as the users table says now: what the doors call.
        ``Unauthenticated`` for an invalid token or a user who is gone or deactivated."""
        return await self._current_users.actor(self.verify(token))

    async def current(self, actor: Actor) -> Actor:
        """``actor`` as the users table says now (within ``TOKEN_USER_RECHECK_SECONDS``): for a
        long call, such as a stream, to stop serving a user deactivated along the way."""
        return await self._current_users.actor(actor)

    def forget_user(self, user_id: UUID) -> None:
        """Look ``user_id`` up again on their next request (after a change to the user)."""
        self._current_users.forget(user_id)

    def jwks(self) -> dict[str, list[JWKDict]]:
        """The public verification keys (``/.well-known/jwks.json``)."""
        return self._keys.jwks()

    def verify(self, token: str) -> Actor:
        """The actor a valid token names, as it was when the token was issued (its signature,
        expiry, audience and issuer only); ``Unauthenticated`` for anything else.

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
            kid = jwt.get_unverified_header(token).get("kid")
            if kid is not None and not isinstance(kid, str):
                raise Unauthenticated("token is not valid")
            key = self._keys.verification_key(kid)
            if key is None:  # an unknown key id (or none, where kid-less tokens are refused)
                raise Unauthenticated("token is not valid")
            claims = jwt.decode(
                token,
                key,
                algorithms=[self._keys.algorithm],
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
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as error:
            raise Unauthenticated("token is not valid") from error
