"""Roles and the actor on whose behalf the core acts. Authorization rules live in the core."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID


class Role(StrEnum):
    CUSTOMER = "customer"
    TELLER = "teller"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking: the authenticated user, as the core sees them."""

    user_id: UUID
    username: str
    role: Role

    @property
    def reads_everything(self) -> bool:
        return self.role in (Role.TELLER, Role.AUDITOR, Role.ADMIN)

    @property
    def moves_any_account(self) -> bool:
        """Tellers and admins act on any customer's account; customers only on their own."""
        return self.role in (Role.TELLER, Role.ADMIN)

    @property
    def can_move_money(self) -> bool:
        return self.role is not Role.AUDITOR

    @property
    def can_credit(self) -> bool:
        """Money entering the bank needs a teller or an admin."""
        return self.role in (Role.TELLER, Role.ADMIN)

    @property
    def manages_users(self) -> bool:
        return self.role is Role.ADMIN


SYSTEM_ACTOR_NAME = "system"
