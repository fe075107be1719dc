"""The wrappers of the movement service on reversals: metrics count a reversal as the
movement it is (a decline under ``reversal``), a retry as a replay only; the cache drops
exactly the balances a reversal changed, on both sides of a transfer."""

from __future__ import annotations

from decimal import Decimal

import pytest

from banking.cache.invalidation import InvalidatingMovements
from banking.domain.errors import InsufficientFundsDeclined
from banking.domain.records import ReversalRequest
from banking.observability.movements import MeasuredMovements
from tests.ledger.test_wrappers import Recorder
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, make_world, request
from tests.support.ledger import Core


async def test_metrics_count_a_reversal_as_its_movement_and_a_retry_once(core: Core) -> None:
    world = await make_world(core)
    recorder = Recorder()
    measured = MeasuredMovements(core.movements, recorder)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "20.00"))
    credit = await core.movements.credit(world.teller, request(CREDIT, world.usd_bob, "5.00"))
    await core.movements.debit(world.bob, request(DEBIT, world.usd_bob, "14.00"))
    back = ReversalRequest(debit.transaction.transaction_id, "refund", reference_id="w1")
    gone = ReversalRequest(credit.transaction.transaction_id, "chargeback", reference_id="w2")

    await measured.reverse(world.teller, back)
    await measured.reverse(world.teller, back)  # a retry
    for _ in range(2):
        with pytest.raises(InsufficientFundsDeclined):
            await measured.reverse(world.teller, gone)

    assert recorder.calls == [
        ("movement", "credit", "completed", "20.00"),
        ("replayed", "credit"),
        ("movement", "reversal", "failed", "0.00"),
        ("declined", "reversal", "INSUFFICIENT_FUNDS"),
        ("replayed", "reversal"),
    ]


async def test_the_cache_drops_both_balances_of_a_reversed_transfer(core: Core) -> None:
    world = await make_world(core)
    recorder = Recorder()
    invalidating = InvalidatingMovements(core.movements, recorder)
    sent = await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "10.00", destination=world.usd_bob)
    )
    refund = ReversalRequest(sent.transaction.transaction_id, "refund", Decimal("4.00"), "w3")

    await invalidating.reverse(world.teller, refund)
    await invalidating.reverse(world.teller, refund)  # a replay changed nothing

    assert [set(dropped) for dropped in recorder.dropped] == [
        {world.usd.account_id, world.usd_bob.account_id}
    ]
