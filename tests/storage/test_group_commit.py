"""Group commit under concurrency, on every store: many movements at once (mixed keys,
duplicates that land in one group, declines, a hot account, both directions between the same
two accounts) through ``GroupCommit`` leave exact balances, no deadlock or database error
reaching a caller, one application per key, and each account's events in balance-version
order."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from decimal import Decimal

import pytest

from banking.domain.errors import BankingError, InsufficientFundsDeclined
from banking.domain.records import (
    HistoryFilter,
    MovementResult,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Role
from banking.ledger.groups import GroupCommit
from banking.ledger.movements import MovementService
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, request
from tests.support.ledger import Core

ACCOUNTS = 6
FUNDING = Decimal("50.00")
MOVEMENTS = 240
SEED = 20261202


@pytest.mark.parametrize("in_flight", [1, 4], ids=["one-group-at-a-time", "four-groups-at-once"])
async def test_concurrent_movements_through_group_commit_keep_the_books(
    any_core: Core, in_flight: int
) -> None:
    core = any_core
    owner = await core.user()
    admin = await core.user(Role.ADMIN)
    accounts = [await core.account(owner, str(FUNDING)) for _ in range(ACCOUNTS)]
    hot = accounts[0]
    group_commit = GroupCommit(
        core.unit_of_work, window_seconds=0.002, max_items=16, in_flight_max=in_flight
    )
    movements = MovementService(core.unit_of_work, group_commit=group_commit)
    rng = random.Random(SEED)
    asked = []
    for number in range(MOVEMENTS):
        kind = rng.choice([TRANSFER, TRANSFER, TRANSFER, DEBIT, CREDIT])
        source = hot if number % 3 == 0 else rng.choice(accounts)
        destination = rng.choice([a for a in accounts if a is not source])
        if number % 7 == 0:  # both directions between the same two accounts
            source, destination = accounts[1], accounts[2]
        elif number % 7 == 1:
            source, destination = accounts[2], accounts[1]
        amount = f"{rng.choice(['0.50', '3.00', '12.00', '40.00'])}"
        asked.append(
            (
                kind,
                request(kind, source, amount, destination=destination, reference_id=f"k-{number}"),
            )
        )
    # every 5th movement is sent twice at once: the copies usually share a group
    sent = [entry for number, entry in enumerate(asked) for _ in range(2 if number % 5 == 0 else 1)]

    async def send(kind: TransactionType, movement: object) -> MovementResult | BankingError:
        try:
            if kind is TRANSFER:
                return await movements.transfer(admin, movement)  # type: ignore[arg-type]
            if kind is CREDIT:
                return await movements.credit(admin, movement)  # type: ignore[arg-type]
            return await movements.debit(admin, movement)  # type: ignore[arg-type]
        except BankingError as error:
            return error

    results = await asyncio.gather(*(send(kind, movement) for kind, movement in sent))

    # Only business outcomes reach the callers: no deadlock, no database error.
    assert all(isinstance(r, MovementResult | InsufficientFundsDeclined) for r in results), {
        type(r).__name__ for r in results
    }
    # the load covers what it claims: declines and replays of a duplicate
    assert any(isinstance(r, InsufficientFundsDeclined) for r in results)
    assert any(isinstance(r, MovementResult) and r.replayed for r in results)
    by_key: dict[str, set[object]] = defaultdict(set)
    expected = {account.account_id: FUNDING for account in accounts}
    applied: set[str] = set()
    for (kind, movement), result in zip(sent, results, strict=True):
        key = movement.reference_id or ""
        outcome = (
            result.transaction.transaction_id
            if isinstance(result, MovementResult)
            else result.transaction_id
        )
        by_key[key].add(outcome)
        if isinstance(result, MovementResult) and key not in applied:
            applied.add(key)
            if kind is TRANSFER:
                expected[movement.source_account_id] -= movement.amount  # type: ignore[union-attr]
                expected[movement.destination_account_id] += movement.amount  # type: ignore[union-attr]
            elif kind is CREDIT:
                expected[movement.account_id] += movement.amount  # type: ignore[union-attr]
            else:
                expected[movement.account_id] -= movement.amount  # type: ignore[union-attr]
    # both copies of a key were told the same leg
    assert all(len(outcomes) == 1 for outcomes in by_key.values())
    for account in accounts:
        assert await core.available(account) == expected[account.account_id]
    legs = {}
    async with core.unit_of_work.read() as store:
        for account in accounts:
            for leg in await store.list_transactions(
                account.account_id, HistoryFilter(), after=None, limit=10_000
            ):
                legs[leg.transaction_id] = leg
    initiating = [
        leg for leg in legs.values() if leg.transaction_type is not TransactionType.TRANSFER_IN
    ]
    keys = [leg.reference_id for leg in initiating if leg.reference_id.startswith("k-")]
    assert len(keys) == len(set(keys)) == MOVEMENTS  # every key stored once
    completed = {
        leg.reference_id
        for leg in initiating
        if leg.status is TransactionStatus.COMPLETED and leg.reference_id.startswith("k-")
    }
    assert completed == applied
    versions: dict[str, list[int]] = defaultdict(list)
    for _topic, key, event_type, payload in await core.outbox():
        if event_type == "balance.updated":
            versions[key].append(int(payload["version"]))
    for account in accounts:
        seen = versions[str(account.account_id)]
        assert seen == list(range(seen[0], seen[0] + len(seen))), "events out of version order"
    assert (await core.reconcile()).clean
