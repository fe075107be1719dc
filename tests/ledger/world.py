"""A small bank to test the money rules in, and the requests to send it.

``make_world`` opens the same accounts on any store (``tests/ledger`` on the in-memory one,
``tests/storage/test_store_contract.py`` on all three), so a scenario is a function of the
``Core`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal, overload
from uuid import UUID

from banking.domain.records import (
    Account,
    Command,
    DebitOrCredit,
    MovementResult,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor, Role
from banking.events.commands import command_from_payload
from banking.events.outbox import EVENT_TRANSACTION_SUBMITTED
from tests.support.ledger import Core

DEBIT: Final = TransactionType.DEBIT
CREDIT: Final = TransactionType.CREDIT
TRANSFER: Final = TransactionType.TRANSFER_OUT
# The three movements a caller can ask for (a transfer is asked for by its out-leg's type).
KINDS = (DEBIT, CREDIT, TRANSFER)
Request = DebitOrCredit | TransferRequest


class Path(StrEnum):
    """How a movement is asked for: answered at once, or accepted and applied later."""

    SYNC = "sync"
    SUBMIT = "submit"


PATHS = (Path.SYNC, Path.SUBMIT)


@dataclass(frozen=True)
class World:
    alice: Actor  # a customer
    bob: Actor  # another customer
    teller: Actor
    admin: Actor
    auditor: Actor
    usd: Account  # Alice's, 100.00 USD
    usd_bob: Account  # Bob's, 10.00 USD
    jpy: Account  # Alice's, 1000 JPY
    jpy_bob: Account  # Bob's, empty, JPY

    def mover(self, kind: TransactionType) -> Actor:
        """Who asks for ``kind`` on Alice's accounts: a teller credits, Alice debits and
        transfers."""
        return self.teller if kind is CREDIT else self.alice

    def counterpart(self, account: Account) -> Account:
        """Bob's account in the currency of ``account``: where a transfer goes."""
        return self.jpy_bob if account.currency == "JPY" else self.usd_bob


async def make_world(core: Core) -> World:
    alice, bob = await core.user(), await core.user()
    return World(
        alice=alice,
        bob=bob,
        teller=await core.user(Role.TELLER),
        admin=await core.user(Role.ADMIN),
        auditor=await core.user(Role.AUDITOR),
        usd=await core.account(alice, "100.00"),
        usd_bob=await core.account(bob, "10.00"),
        jpy=await core.account(alice, "1000", currency="JPY"),
        jpy_bob=await core.account(bob, currency="JPY"),
    )


def _id(account: Account | UUID) -> UUID:
    return account.account_id if isinstance(account, Account) else account


@overload
def request(
    kind: Literal[TransactionType.DEBIT, TransactionType.CREDIT],
    account: Account | UUID,
    amount: str = ...,
    *,
    destination: Account | UUID | None = ...,
    currency: str | None = ...,
    description: str | None = ...,
    reference_id: str | None = ...,
) -> DebitOrCredit: ...


@overload
def request(
    kind: Literal[TransactionType.TRANSFER_OUT],
    account: Account | UUID,
    amount: str = ...,
    *,
    destination: Account | UUID | None = ...,
    currency: str | None = ...,
    description: str | None = ...,
    reference_id: str | None = ...,
) -> TransferRequest: ...


@overload
def request(
    kind: TransactionType,
    account: Account | UUID,
    amount: str = ...,
    *,
    destination: Account | UUID | None = ...,
    currency: str | None = ...,
    description: str | None = ...,
    reference_id: str | None = ...,
) -> Request: ...


def request(
    kind: TransactionType,
    account: Account | UUID,
    amount: str = "1.00",
    *,
    destination: Account | UUID | None = None,
    currency: str | None = None,
    description: str | None = None,
    reference_id: str | None = None,
) -> Request:
    """The request for ``kind`` on ``account``, in the account's currency unless told."""
    if currency is None:
        currency = account.currency if isinstance(account, Account) else "USD"
    if kind is TRANSFER:
        if destination is None:
            raise ValueError("a transfer needs a destination")
        return TransferRequest(
            _id(account), _id(destination), Decimal(amount), currency, description, reference_id
        )
    return DebitOrCredit(_id(account), Decimal(amount), currency, description, reference_id)


async def move(core: Core, actor: Actor, kind: TransactionType, asked: Request) -> MovementResult:
    """Ask for a movement and wait for its answer."""
    if isinstance(asked, TransferRequest):
        return await core.movements.transfer(actor, asked)
    if kind is CREDIT:
        return await core.movements.credit(actor, asked)
    return await core.movements.debit(actor, asked)


async def ask(
    core: Core, path: Path, actor: Actor, kind: TransactionType, asked: Request
) -> MovementResult:
    """Ask for a movement synchronously, or submit it for later."""
    if path is Path.SUBMIT:
        return await core.movements.submit(actor, kind, asked)
    return await move(core, actor, kind, asked)


async def submitted_commands(core: Core) -> list[Command]:
    """The commands of every ``transaction.submitted`` event, read back as the command
    processor reads them."""
    return [
        command_from_payload(payload, trace_id=None)
        for _topic, _key, event_type, payload in await core.outbox()
        if event_type == EVENT_TRANSACTION_SUBMITTED
    ]


async def last_command(core: Core) -> Command:
    commands = await submitted_commands(core)
    if not commands:
        raise AssertionError("nothing was submitted")
    return commands[-1]
