"""The simulator: deterministic per seed, exact amounts, every fraud pattern, a daily rhythm."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from banking.domain.records import TransactionType
from banking.fraud.simulate import PATTERNS, OperationKind, run, simulate


def test_the_same_seed_gives_the_same_history_and_another_seed_another() -> None:
    first = simulate(3, 40, 10)
    again = simulate(3, 40, 10)
    other = simulate(4, 40, 10)
    assert first == again
    assert [item.movement.amount for item in first] != [item.movement.amount for item in other]


def test_amounts_are_positive_decimals_with_two_places_and_legs_are_in_time_order() -> None:
    legs = simulate(3, 40, 10)
    assert all(isinstance(item.movement.amount, Decimal) for item in legs)
    assert all(item.movement.amount.as_tuple().exponent == -2 for item in legs)
    assert all(item.movement.amount > 0 for item in legs)
    times = [item.movement.created_at for item in legs]
    assert times == sorted(times)


def test_every_fraud_pattern_is_present_and_most_traffic_is_normal() -> None:
    legs = simulate(3, 80, 20)
    counts = Counter(item.pattern for item in legs)
    assert set(PATTERNS) <= set(counts)
    assert counts[None] > 10 * sum(counts[pattern] for pattern in PATTERNS)


def test_operations_map_to_legs_through_account_indices() -> None:
    simulation = run(3, 40, 10)
    ids = simulation.account_ids
    for item in simulation.movements:
        operation = simulation.operations[item.operation_index]
        assert item.movement.account_id == ids[item.account_index]
        assert item.movement.amount == operation.amount
        assert item.pattern == operation.pattern
        if operation.kind is OperationKind.TRANSFER:
            assert item.counterparty_index is not None
            assert item.movement.counterparty_account_id == ids[item.counterparty_index]
    # A transfer between two customers is two legs; one with an outside account is one.
    by_operation = Counter(item.operation_index for item in simulation.movements)
    for index, operation in enumerate(simulation.operations):
        if operation.kind is OperationKind.TRANSFER:
            assert operation.counterparty_index is not None
            inside = (operation.account_index < simulation.customers) + (
                operation.counterparty_index < simulation.customers
            )
            assert by_operation[index] == inside


def test_card_spend_follows_a_daily_rhythm() -> None:
    debits = [
        item.movement
        for item in simulate(3, 80, 14)
        if item.pattern is None and item.movement.kind is TransactionType.DEBIT
    ]
    evening = sum(1 for movement in debits if 17 <= movement.created_at.hour < 21)
    small_hours = sum(1 for movement in debits if 1 <= movement.created_at.hour < 3)
    assert evening > 10 * max(1, small_hours)


@pytest.mark.parametrize(("customers", "days"), [(1, 10), (40, 0), (40, 400), (200_000, 1)])
def test_out_of_range_sizes_are_refused(customers: int, days: int) -> None:
    with pytest.raises(ValueError):
        simulate(1, customers, days)
