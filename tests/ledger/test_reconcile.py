"""Reconciliation: the books balance after any mix of movements, and every kind of tampering
with them is reported."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from uuid import UUID

import pytest

from banking.domain.errors import AccountInactiveDeclined, BankingError, InsufficientFundsDeclined
from banking.domain.records import (
    Account,
    Command,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor, Role
from tests.ledger.world import (
    CREDIT,
    DEBIT,
    TRANSFER,
    Request,
    World,
    move,
    request,
)
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork


@dataclass
class Model:
    """What the balances must be, worked out independently of the core."""

    balances: dict[UUID, Decimal]
    active: dict[UUID, bool]
    owners: dict[UUID, Actor]
    answered: list[tuple[Actor, TransactionType, Request, str]] = field(default_factory=list)

    def decide(self, kind: TransactionType, asked: Request, destination: UUID) -> str:
        """The outcome the rules give ``asked``, applied to the model when it moves money."""
        source = (
            asked.source_account_id if isinstance(asked, TransferRequest) else (asked.account_id)
        )
        involved = [source, destination] if kind is TRANSFER else [source]
        if not all(self.active[account_id] for account_id in involved):
            return "ACCOUNT_INACTIVE"
        if kind is CREDIT:
            self.balances[source] += asked.amount
            return "completed"
        if self.balances[source] < asked.amount:
            return "INSUFFICIENT_FUNDS"
        self.balances[source] -= asked.amount
        if kind is TRANSFER:
            self.balances[destination] += asked.amount
        return "completed"


async def random_movements(core: Core, seed: int, operations: int) -> tuple[Model, list[Account]]:
    """``operations`` random credits, debits, transfers (synchronous and submitted), declines,
    freezes and retries on nine accounts in three currencies; each outcome is checked
    against the model as it happens."""
    rng = random.Random(seed)
    teller = await core.user(Role.TELLER)
    customers = [await core.user() for _ in range(3)]
    accounts = [
        await core.account(customer, currency=currency)
        for customer in customers
        for currency in ("USD", "EUR", "JPY")
    ]
    model = Model(
        balances={a.account_id: Decimal("0.00") for a in accounts},
        active={a.account_id: True for a in accounts},
        owners={a.account_id: customers[index // 3] for index, a in enumerate(accounts)},
    )

    def amount(account: Account) -> str:
        if account.currency == "JPY":
            return str(rng.randint(1, 20_000))
        return f"{rng.randint(1, 20_000) / 100:.2f}"

    for step in range(operations):
        choice = rng.random()
        account = rng.choice(accounts)
        if choice < 0.05:
            is_active = not model.active[account.account_id]
            await core.accounts.set_active(teller, account.account_id, is_active=is_active)
            model.active[account.account_id] = is_active
            continue
        if choice < 0.12 and model.answered:
            actor, kind, asked, expected = rng.choice(model.answered)
            await expect(core, actor, kind, asked, expected, replay=True)
            continue
        kind = CREDIT if choice < 0.4 else DEBIT if choice < 0.7 else TRANSFER
        destination = rng.choice(
            [a for a in accounts if a.currency == account.currency and a != account]
        )
        asked = request(
            kind, account, amount(account), destination=destination, reference_id=f"op-{step}"
        )
        actor = teller if kind is CREDIT or rng.random() < 0.2 else model.owners[account.account_id]
        expected = model.decide(kind, asked, destination.account_id)
        if rng.random() < 0.2:
            accepted = await core.movements.submit(actor, kind, asked)
            command = Command(accepted.transaction.transaction_id, kind, asked, actor)
            outcome = await core.movements.apply_command(command)
            assert outcome.leg is not None
            got = outcome.leg.failure_code or "completed"
            assert got == expected, (step, kind, got, expected)
        else:
            await expect(core, actor, kind, asked, expected, replay=False)
        model.answered.append((actor, kind, asked, expected))
    return model, accounts


async def expect(
    core: Core,
    actor: Actor,
    kind: TransactionType,
    asked: Request,
    expected: str,
    *,
    replay: bool,
) -> None:
    errors: dict[str, type[BankingError]] = {
        "ACCOUNT_INACTIVE": AccountInactiveDeclined,
        "INSUFFICIENT_FUNDS": InsufficientFundsDeclined,
    }
    if expected == "completed":
        result = await move(core, actor, kind, asked)
        assert result.replayed is replay
        assert result.transaction.status is TransactionStatus.COMPLETED
        return
    with pytest.raises(errors[expected]) as declined:
        await move(core, actor, kind, asked)
    assert declined.value.replayed is replay


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_the_books_balance_after_random_movements(
    core: Core, seed: int, operations: int = 250
) -> None:
    model, accounts = await random_movements(core, seed, operations)

    report = await core.reconcile()

    # The mix holds every outcome (the run is not all successes).
    outcomes = {expected for *_, expected in model.answered}
    assert outcomes == {"completed", "INSUFFICIENT_FUNDS", "ACCOUNT_INACTIVE"}
    assert report.clean, report.problems
    for account in accounts:
        assert await core.available(account) == model.balances[account.account_id]
    for currency in ("USD", "EUR", "JPY"):
        held = sum(
            (model.balances[a.account_id] for a in accounts if a.currency == currency),
            Decimal("0.00"),
        )
        totals = report.currencies[currency]
        assert Decimal(totals["balances"]) == held
        assert Decimal(totals["credits"]) - Decimal(totals["debits"]) == held
        assert totals["transfers_out"] == totals["transfers_in"]


async def test_the_report_sums_each_currency(core: Core, world: World) -> None:
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "30.00"))
    await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "20.00", destination=world.usd_bob)
    )
    with pytest.raises(InsufficientFundsDeclined):  # a failed leg counts for nothing
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "900.00"))

    report = await core.reconcile()

    assert report.clean, report.problems
    assert report.currencies["USD"] == {
        "balances": "80.00",
        "credits": "110.00",
        "debits": "30.00",
        "transfers_out": "20.00",
        "transfers_in": "20.00",
        "open_holds": "0.00",
    }
    assert report.currencies["JPY"]["balances"] == "1000.00"


async def test_empty_books_are_clean(core: Core) -> None:
    report = await core.reconcile()

    assert report.clean
    assert report.currencies == {}


# --- tampering ------------------------------------------------------------------------

Tamper = Callable[[MemoryUnitOfWork, "Scene"], list[str]]


@dataclass(frozen=True)
class Scene:
    world: World
    debit_id: UUID
    out_id: UUID
    in_id: UUID
    failed_id: UUID


async def a_scene(core: Core, world: World) -> Scene:
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "30.00"))
    out_leg = (
        await core.movements.transfer(
            world.alice, request(TRANSFER, world.usd, "20.00", destination=world.usd_bob)
        )
    ).transaction
    with pytest.raises(InsufficientFundsDeclined) as declined:
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "900.00"))
    assert out_leg.related_transaction_id is not None and declined.value.transaction_id
    return Scene(
        world,
        debit.transaction.transaction_id,
        out_leg.transaction_id,
        out_leg.related_transaction_id,
        declined.value.transaction_id,
    )


def _balance(
    memory: MemoryUnitOfWork,
    account_id: UUID,
    *,
    current: Decimal | None = None,
    available: Decimal | None = None,
) -> None:
    balance = memory.books.balances[account_id]
    memory.books.balances[account_id] = replace(
        balance,
        current_balance=balance.current_balance if current is None else current,
        available_balance=balance.available_balance if available is None else available,
    )


def _leg(
    memory: MemoryUnitOfWork,
    leg_id: UUID,
    *,
    status: TransactionStatus | None = None,
    amount: Decimal | None = None,
) -> None:
    stored = memory.books.legs[leg_id]
    leg = replace(
        stored.leg, status=status or stored.leg.status, amount=amount or stored.leg.amount
    )
    memory.books.legs[leg_id] = replace(stored, leg=leg)


def raise_a_balance(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    usd = scene.world.usd.account_id
    _balance(memory, usd, current=Decimal("51.00"), available=Decimal("51.00"))
    return [
        "USD: balances 81.00 != credits 110.00 - debits 30.00",
        f"account {usd}: current 51.00, available 51.00, sum of completed legs 50.00",
    ]


def split_available_from_current(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    usd = scene.world.usd.account_id
    _balance(memory, usd, available=Decimal("49.00"))
    return [f"account {usd}: current 50.00, available 49.00, sum of completed legs 50.00"]


def make_a_balance_negative(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    bob = scene.world.usd_bob.account_id
    _balance(memory, bob, current=Decimal("-5.00"), available=Decimal("-5.00"))
    return [
        f"account {bob}: current -5.00, available -5.00, sum of completed legs 30.00, "
        "below its overdraft limit 0.00"
    ]


def lose_a_completed_debit(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    del memory.books.legs[scene.debit_id]
    usd = scene.world.usd.account_id
    return [
        "USD: balances 80.00 != credits 110.00 - debits 0.00",
        f"account {usd}: current 50.00, available 50.00, sum of completed legs 80.00",
    ]


def lose_the_receiving_leg(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    del memory.books.legs[scene.in_id]
    return [
        "USD: transfers out 20.00 != transfers in 0.00",
        f"transfer leg {scene.out_id} has no matching partner leg",
    ]


def complete_a_failed_leg(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    _leg(memory, scene.failed_id, status=TransactionStatus.COMPLETED)
    return ["USD: balances 80.00 != credits 110.00 - debits 930.00"]


def change_a_partners_amount(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    _leg(memory, scene.in_id, amount=Decimal("2.00"))
    return [
        "USD: transfers out 20.00 != transfers in 2.00",
        f"transfer leg {scene.out_id} has no matching partner leg",
        f"transfer leg {scene.in_id} has no matching partner leg",
    ]


def fail_the_receiving_leg(memory: MemoryUnitOfWork, scene: Scene) -> list[str]:
    _leg(memory, scene.in_id, status=TransactionStatus.FAILED)
    return [f"transfer leg {scene.out_id} has no matching partner leg"]


TAMPERING: dict[str, Tamper] = {
    "balance-raised": raise_a_balance,
    "available-split-from-current": split_available_from_current,
    "balance-negative": make_a_balance_negative,
    "completed-debit-lost": lose_a_completed_debit,
    "receiving-leg-lost": lose_the_receiving_leg,
    "failed-leg-completed": complete_a_failed_leg,
    "partner-amount-changed": change_a_partners_amount,
    "receiving-leg-failed": fail_the_receiving_leg,
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
async def test_tampered_books_are_reported(
    core: Core, world: World, memory: MemoryUnitOfWork, tampering: str
) -> None:
    scene = await a_scene(core, world)
    assert (await core.reconcile()).clean

    expected = TAMPERING[tampering](memory, scene)
    report = await core.reconcile()

    assert not report.clean
    for problem in expected:
        assert problem in report.problems, report.problems
