"""Who a token's user is now: the users table, read again at most once per interval per user.

A token names its user and the role they had when it was issued. Deactivating a user or
changing their role must not wait for their tokens to expire, yet reading the users table on
every request would put a query in front of every call. So each process remembers what it last
read about each user for ``TOKEN_USER_RECHECK_SECONDS`` (bounded in size): a deactivated user
is refused, and a changed role applies, on every instance within that bound — at once on the
instance that made the change (``forget``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from banking.domain.errors import Unauthenticated
from banking.domain.records import Owner
from banking.domain.roles import Actor
from banking.ledger.ports import UnitOfWork

USERS_REMEMBERED_MAX = 10_000


@dataclass(frozen=True, slots=True)
class _Read:
    user: Owner | None  # None: no such user
    read_at: float


class CurrentUsers:
    """The actor a verified token stands for, as the users table says (at most
    ``recheck_seconds`` old). Requests of one user that find the entry stale at the same
    moment may each read it once; otherwise a user costs one read per interval."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        *,
        recheck_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if recheck_seconds < 0:
            raise ValueError("recheck_seconds must not be negative")
        self._unit_of_work = unit_of_work
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._reads: dict[UUID, _Read] = {}
        # Bumped by ``forget``: a read that began before a change is not remembered after it.
        self._generation = 0

    async def actor(self, claimed: Actor) -> Actor:
        """The current actor behind ``claimed`` (a verified token's claims): its current name
        and role; ``Unauthenticated`` when the user is gone or deactivated."""
        user = await self._user(claimed.user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("the user of this token is not active")
        return user.as_actor()

    def forget(self, user_id: UUID) -> None:
        """Read ``user_id`` again on its next request (called after changing the user)."""
        self._generation += 1
        self._reads.pop(user_id, None)

    async def _user(self, user_id: UUID) -> Owner | None:
        now = self._clock()
        remembered = self._reads.get(user_id)
        if remembered is not None and now - remembered.read_at < self._recheck_seconds:
            return remembered.user
        generation = self._generation
        async with self._unit_of_work.read() as store:
            user = await store.get_owner(user_id)
        if generation != self._generation:
            return user  # a user changed meanwhile: answer, but do not remember
        self._reads.pop(user_id, None)  # re-inserted last: the dict stays oldest-read first
        if len(self._reads) >= USERS_REMEMBERED_MAX:
            self._reads.pop(next(iter(self._reads)))
        self._reads[user_id] = _Read(user, now)
        return user
