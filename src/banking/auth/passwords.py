"""Password hashing with argon2id (argon2-cffi; RFC 9106 low-memory profile by default)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PASSWORD_LENGTH_MIN = 12
PASSWORD_LENGTH_MAX = 256


class Passwords:
    """Hashes and verifies passwords. The cost is configurable (tests use a cheap one);
    hashes record their own parameters, so a cost change never locks anyone out."""

    def __init__(self, *, time_cost: int = 3, memory_cost_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib)
        # Verifying against this when the user does not exist keeps both answers' timing alike.
        self._dummy_hash = self._hasher.hash("timing-equalizer-not-a-real-password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            matches = self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matches and password_hash is not None
