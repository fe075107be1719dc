"""Authorization rules of DESIGN.md section 5, applied by the core for every door."""

from __future__ import annotations

from banking.domain.errors import AccountNotFound, Forbidden
from banking.domain.records import Account
from banking.domain.roles import Actor


def require_visible(actor: Actor, account: Account | None) -> Account:
    """The account if the actor may see it. Another customer's account is 'not found' (404),
    so account ids cannot be probed."""
    if account is None or not (actor.reads_everything or account.customer_id == actor.user_id):
        raise AccountNotFound("account not found")
    return account


def require_can_debit(actor: Actor, account: Account | None) -> Account:
    """Customers debit and transfer from their own accounts; tellers and admins from any."""
    visible = require_visible(actor, account)
    require_moves_money(actor)
    if not actor.moves_any_account and visible.customer_id != actor.user_id:
        raise AccountNotFound("account not found")
    return visible


def require_moves_money(actor: Actor) -> None:
    if not actor.can_move_money:
        raise Forbidden(f"role {actor.role.value} cannot move money")


def require_can_credit(actor: Actor) -> None:
    if not actor.can_credit:
        raise Forbidden("crediting an account needs the teller or admin role")


def require_manages_users(actor: Actor) -> None:
    if not actor.manages_users:
        raise Forbidden("managing users needs the admin role")


def require_manages_accounts(actor: Actor) -> None:
    if not actor.moves_any_account:
        raise Forbidden("this change needs the teller or admin role")
