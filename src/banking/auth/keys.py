"""The key ring tokens are signed and verified with: keys by ``kid``, one of them signing.

HS256/384/512 keep shared secrets; EdDSA and RS256 keep public keys, and the private key only
on the process that issues tokens (the REST API serving ``/auth/token``). Several keys verify
at once, so a new key can be rolled out before it signs and an old one kept until the tokens
it signed have expired (README, "Rotating signing keys"). Keys come from
``Settings.token_keys``, which read and checked them at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from jwt.types import JWKDict

from banking.config import (
    HMAC_JWT_ALGORITHMS,
    PrivateSigningKey,
    PublicVerificationKey,
    TokenKeys,
)
from banking.domain.errors import InvariantViolated, ServiceUnavailable

# PyJWT keys: an HMAC secret, or a private (signing) or public (verifying) key object.
SigningKey = str | PrivateSigningKey
VerificationKey = str | PublicVerificationKey


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys of one process. Its ``repr`` names the key ids, never a key."""

    algorithm: str
    signing_kid: str | None
    kidless_kid: str | None
    _signing_key: SigningKey | None = field(repr=False)
    _verification_keys: Mapping[str, VerificationKey] = field(repr=False)

    @classmethod
    def of(cls, keys: TokenKeys) -> KeyRing:
        verification: dict[str, VerificationKey] = {**keys.hmac_secrets, **keys.public_keys}
        signing: SigningKey | None = None
        if keys.signing_kid is not None:
            signing = (
                keys.hmac_secrets[keys.signing_kid]
                if keys.algorithm in HMAC_JWT_ALGORITHMS
                else keys.private_key
            )
        return cls(keys.algorithm, keys.signing_kid, keys.kidless_kid, signing, verification)

    @property
    def kids(self) -> tuple[str, ...]:
        """The key ids a token may name."""
        return tuple(self._verification_keys)

    @property
    def issues(self) -> bool:
        """Whether this process can sign tokens (False where only public keys are held)."""
        return self._signing_key is not None

    def signing_key(self) -> tuple[str, SigningKey]:
        """The key id and key new tokens are signed with."""
        if self.signing_kid is None or self._signing_key is None:
            raise ServiceUnavailable(
                "this instance does not issue tokens (it holds no signing key)"
            )
        return self.signing_kid, self._signing_key

    def verification_key(self, kid: str | None) -> VerificationKey | None:
        """The key a token naming ``kid`` must be signed with; None for an unknown kid. A token
        without ``kid`` is verified with JWT_SECRET's key only (tokens from before kids)."""
        if kid is None:
            kid = self.kidless_kid
        return None if kid is None else self._verification_keys.get(kid)

    def jwks(self) -> dict[str, list[JWKDict]]:
        """The public keys as a JSON Web Key Set (RFC 7517); empty for shared secrets."""
        if self.algorithm in HMAC_JWT_ALGORITHMS:
            return {"keys": []}
        published: list[JWKDict] = []
        for kid, key in self._verification_keys.items():
            jwk: dict[str, Any] = dict(_public_jwk(key))
            jwk.update(kid=kid, alg=self.algorithm, use="sig")
            published.append(jwk)
        return {"keys": published}


def _public_jwk(key: VerificationKey) -> JWKDict:
    if isinstance(key, RSAPublicKey):
        return RSAAlgorithm.to_jwk(key, as_dict=True)
    if isinstance(key, Ed25519PublicKey | Ed448PublicKey):
        return OKPAlgorithm.to_jwk(key, as_dict=True)
    raise InvariantViolated("only public keys are ever published")
