"""The feature book: the values of the windows, idempotence, bounded memory, and the same
features after a restart (state rebuilt by ``load``) as with no restart."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from banking.domain.records import TransactionStatus, TransactionType
from banking.fraud.assessment import Movement
from banking.fraud.features import HISTORY_DAYS, HISTORY_LIMIT, HISTORY_SECONDS, FeatureBook
from banking.fraud.simulate import simulate

ACCOUNT = UUID(int=1)
FRIEND = UUID(int=2)
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def leg(
    seconds: float,
    amount: str,
    kind: TransactionType = TransactionType.DEBIT,
    counterparty: UUID | None = None,
    status: TransactionStatus = TransactionStatus.COMPLETED,
    account: UUID = ACCOUNT,
) -> Movement:
    return Movement(
        transaction_id=uuid4(),
        account_id=account,
        kind=kind,
        amount=Decimal(amount),
        currency="USD",
        counterparty_account_id=counterparty,
        created_at=START + timedelta(seconds=seconds),
        status=status,
    )


def test_an_account_without_history_has_empty_windows() -> None:
    features = FeatureBook().features(leg(0, "25.00"))
    assert features.count_24h == 0
    assert features.seconds_since_last == HISTORY_SECONDS
    assert features.zscore == 0
    assert features.amount_log == pytest.approx(math.log10(26.0))


def test_windows_count_and_sum_the_legs_before_the_movement() -> None:
    book = FeatureBook()
    for movement in (
        leg(-2 * 86_400, "10.00"),  # outside 24 h
        leg(-7_200, "20.00"),  # in 24 h only
        leg(-1_800, "30.00", status=TransactionStatus.FAILED),  # a decline in the hour
        leg(-30, "40.00"),  # in the minute
    ):
        book.observe(movement)
    features = book.features(leg(0, "50.00"))
    assert (features.count_1m, features.count_1h, features.count_24h) == (1, 2, 3)
    assert features.sum_1m_log == pytest.approx(math.log10(41.0))
    assert features.sum_1h_log == pytest.approx(math.log10(41.0))  # the decline moved nothing
    assert features.sum_24h_log == pytest.approx(math.log10(61.0))
    assert features.declines_1h == 1
    assert features.seconds_since_last == 30


def test_counterparties_tiny_amounts_and_near_threshold_amounts() -> None:
    book = FeatureBook()
    book.observe(leg(-3 * 86_400, "60.00", TransactionType.TRANSFER_OUT, FRIEND))
    book.observe(leg(-100, "1.00"))
    book.observe(leg(-50, "9500.00", TransactionType.CREDIT))
    for sender in range(3):
        book.observe(
            leg(-10 - sender, "300.00", TransactionType.TRANSFER_IN, UUID(int=10 + sender))
        )
    known = book.features(leg(0, "70.00", TransactionType.TRANSFER_OUT, FRIEND))
    assert known.new_counterparty == 0
    stranger = book.features(leg(0, "70.00", TransactionType.TRANSFER_IN, UUID(int=99)))
    assert stranger.new_counterparty == 1
    assert stranger.counterparties_in_24h == 4  # three senders and this one
    probe = book.features(leg(0, "0.50"))
    assert probe.is_tiny == 1 and probe.tiny_outflows_1h == 1
    deposit = book.features(leg(0, "9990.00", TransactionType.CREDIT))
    assert deposit.near_threshold == 1 and deposit.near_threshold_7d == 1
    assert book.features(leg(0, "10000.00", TransactionType.CREDIT)).near_threshold == 0


def test_deviation_and_zscore_compare_with_the_same_direction_only() -> None:
    book = FeatureBook()
    for number, amount in enumerate(("20.00", "25.00", "30.00", "22.00")):
        book.observe(leg(-86_400 + number * 600, amount))
    book.observe(leg(-3_600, "3000.00", TransactionType.CREDIT))  # a salary: another direction
    large = book.features(leg(0, "2000.00"))
    assert large.history_count == 4
    assert large.deviation_log > 1.5  # about a hundred times the usual debit
    assert large.zscore > 5
    usual = book.features(leg(0, "24.00"))
    assert abs(usual.zscore) < 1


def test_observing_a_leg_twice_changes_nothing() -> None:
    book = FeatureBook()
    first = leg(-60, "40.00")
    book.observe(first)
    once = book.features(leg(0, "10.00"))
    book.observe(first)
    assert book.features(leg(0, "10.00")) == once


def test_features_do_not_change_the_state() -> None:
    book = FeatureBook()
    book.observe(leg(-60, "40.00"))
    probe = leg(0, "10.00")
    assert book.features(probe) == book.features(probe)
    assert book.features(leg(1, "10.00")).count_1h == 1  # the observed leg, not the probe


def test_the_book_holds_at_most_max_accounts_least_recently_used_first_out() -> None:
    book = FeatureBook(max_accounts=2)
    first, second, third = UUID(int=11), UUID(int=12), UUID(int=13)
    book.observe(leg(0, "1.00", account=first))
    book.observe(leg(0, "1.00", account=second))
    book.features(leg(1, "1.00", account=first))  # first is now the most recent
    book.observe(leg(2, "1.00", account=third))
    assert len(book) == 2
    assert book.known(first) and book.known(third) and not book.known(second)


def test_load_refuses_a_leg_of_another_account() -> None:
    with pytest.raises(ValueError, match="not of account"):
        FeatureBook().load(ACCOUNT, [leg(0, "1.00", account=FRIEND)])


def test_a_book_rebuilt_from_the_database_gives_the_same_features() -> None:
    """A worker restarted mid-stream loads each account's last HISTORY_DAYS of legs (newest
    HISTORY_LIMIT, oldest first) and then scores exactly as if it had never stopped."""
    movements = [item.movement for item in simulate(8, 30, 45)]
    restart_at = movements[0].created_at + timedelta(days=40)
    before = [movement for movement in movements if movement.created_at < restart_at]
    after = [movement for movement in movements if movement.created_at >= restart_at]
    assert before and after

    running = FeatureBook()
    for movement in before:
        running.observe(movement)

    restarted = FeatureBook()
    by_account: dict[UUID, list[Movement]] = defaultdict(list)
    for movement in before:
        if movement.created_at >= restart_at - timedelta(days=HISTORY_DAYS):
            by_account[movement.account_id].append(movement)
    for account_id, history in by_account.items():
        restarted.load(account_id, history[-HISTORY_LIMIT:])

    for movement in after:
        if not restarted.known(movement.account_id):
            restarted.load(movement.account_id, [])
        assert restarted.features(movement) == running.features(movement)
        running.observe(movement)
        restarted.observe(movement)
