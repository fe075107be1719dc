"""Per-account features of a movement, kept incrementally and rebuilt from the ledger.

A ``FeatureBook`` holds, for at most ``max_accounts`` accounts (least recently used first out),
two bounded windows of that account's legs:

* the last 24 hours (at most ``WINDOW_LIMIT`` legs): counts, sums, declines, tiny debits and
  distinct counterparties per 1 minute / 1 hour / 24 hours;
* the last ``HISTORY_DAYS`` days (at most ``STATS_LIMIT`` legs): the account's usual amounts
  (mean and spread, per direction), its known counterparties, the time since its last movement
  and the amounts just under the reporting threshold in the last 7 days.

``features(movement)`` answers the values for a movement from the state *before* it and changes
nothing; ``observe(movement)`` adds it (once: a transaction id already seen is ignored, so a
redelivered event changes nothing; a pending leg that completes later keeps its first status).
Every window is also filtered by time when it is read, so a book rebuilt by ``load`` from the
database gives exactly the features of a book that saw every movement as it happened. The
worker's query for ``load`` is: that account's legs created in the last ``HISTORY_DAYS`` days,
the newest ``HISTORY_LIMIT`` of them, passed oldest first.

Feature values are floats: they are model inputs, never amounts. Amounts enter as
``log10(1 + amount)`` (and ratios of such logs); the ``Decimal`` amount of a movement is only
compared with the ``Decimal`` thresholds below (tiny, just under the reporting threshold), and
no float is ever turned back into an amount. Hours are UTC.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC
from decimal import Decimal
from typing import Final, NamedTuple
from uuid import UUID

from banking.domain.records import TransactionStatus, TransactionType
from banking.fraud.assessment import Movement

HISTORY_DAYS: Final = 30
HISTORY_LIMIT: Final = 1_000  # legs per account the worker loads (>= WINDOW_LIMIT)
STATS_LIMIT: Final = 200  # legs per account behind the mean, spread and known counterparties
WINDOW_LIMIT: Final = 1_000  # legs per account in the 24-hour window (counts saturate there)
MAX_ACCOUNTS: Final = 50_000

REPORTING_THRESHOLD: Final = Decimal("10000.00")  # cash/transfer reporting threshold
STRUCTURING_FLOOR: Final = Decimal("9000.00")  # "just under": [9,000.00, 10,000.00)
TINY_AMOUNT: Final = Decimal("3.00")  # a card-testing probe is below this

MINUTE: Final = 60.0
HOUR: Final = 3_600.0
DAY: Final = 86_400.0
WEEK: Final = 7 * DAY
HISTORY_SECONDS: Final = HISTORY_DAYS * DAY
SPREAD_FLOOR: Final = 0.2  # log10 units: a spread below a factor ~1.6 is not trusted
NIGHT_HOURS: Final = (0, 6)  # [00:00, 06:00) UTC


@dataclass(frozen=True, slots=True)
class Features:
    """The feature values of one movement (floats; flags are 0.0 or 1.0)."""

    amount_log: float  # log10(1 + amount)
    is_outflow: float  # debit or transfer_out
    is_transfer: float
    is_tiny: float  # amount < TINY_AMOUNT
    near_threshold: float  # STRUCTURING_FLOOR <= amount < REPORTING_THRESHOLD
    count_1m: float  # the account's legs (any status) in the window before this one
    count_1h: float
    count_24h: float
    sum_1m_log: float  # log10(1 + sum of the window's non-failed amounts)
    sum_1h_log: float
    sum_24h_log: float
    seconds_since_last: float  # HISTORY_SECONDS when the account has no recent movement
    quiet_log: float  # log10(1 + seconds_since_last)
    mean_log: float  # mean amount_log of the account's same-direction history (0: none)
    deviation_log: float  # amount_log - mean_log (0 without history)
    zscore: float  # deviation_log / max(spread, SPREAD_FLOOR) (0 without history)
    history_count: float  # same-direction non-failed legs behind mean_log
    new_counterparty: float  # a transfer with an account not seen before the last 24 hours
    hour_of_day: float  # UTC, 0.0 <= h < 24.0
    night: float  # hour in NIGHT_HOURS
    declines_1h: float  # failed legs in the last hour
    tiny_outflows_1h: float  # tiny debits/transfers out in the last hour
    counterparties_in_24h: float  # distinct senders in 24 h, this movement's included
    counterparties_out_24h: float  # distinct receivers in 24 h, this movement's included
    near_threshold_7d: float  # legs just under the reporting threshold in the last 7 days

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FEATURE_NAMES}

    def vector(self, names: Sequence[str]) -> list[float]:
        """The values of ``names``, in that order (a model's input row)."""
        return [getattr(self, name) for name in names]


FEATURE_NAMES: Final = tuple(field.name for field in fields(Features))


class _Leg(NamedTuple):
    """What the book keeps of one leg."""

    at: float  # epoch seconds
    amount: float  # only ever summed into a log feature
    amount_log: float
    outflow: bool
    counterparty: UUID | None
    failed: bool
    tiny: bool
    near: bool


def _amount_log(amount: Decimal) -> float:
    return math.log10(1.0 + float(amount))


def _leg_of(movement: Movement) -> _Leg:
    return _Leg(
        at=movement.created_at.timestamp(),
        amount=float(movement.amount),
        amount_log=_amount_log(movement.amount),
        outflow=movement.is_outflow,
        counterparty=movement.counterparty_account_id,
        failed=movement.status is TransactionStatus.FAILED,
        tiny=movement.amount < TINY_AMOUNT,
        near=STRUCTURING_FLOOR <= movement.amount < REPORTING_THRESHOLD,
    )


class _Account:
    """One account's windows and the transaction ids it has seen."""

    __slots__ = ("history", "recent", "seen")

    def __init__(self) -> None:
        self.recent: deque[_Leg] = deque(maxlen=WINDOW_LIMIT)
        self.history: deque[_Leg] = deque(maxlen=STATS_LIMIT)
        self.seen: OrderedDict[UUID, None] = OrderedDict()

    def observe(self, transaction_id: UUID, leg: _Leg) -> None:
        if transaction_id in self.seen:
            return
        self.seen[transaction_id] = None
        if len(self.seen) > HISTORY_LIMIT:
            self.seen.popitem(last=False)
        self.recent.append(leg)
        self.history.append(leg)
        while self.recent and self.recent[0].at < leg.at - DAY:
            self.recent.popleft()
        while self.history and self.history[0].at < leg.at - HISTORY_SECONDS:
            self.history.popleft()


class FeatureBook:
    """Per-account feature state for at most ``max_accounts`` accounts (LRU)."""

    def __init__(self, max_accounts: int = MAX_ACCOUNTS) -> None:
        if max_accounts < 1:
            raise ValueError("a feature book holds at least one account")
        self._max_accounts = max_accounts
        self._accounts: OrderedDict[UUID, _Account] = OrderedDict()

    def __len__(self) -> int:
        return len(self._accounts)

    def known(self, account_id: UUID) -> bool:
        """Whether the book holds this account's state (else the worker ``load``s it)."""
        return account_id in self._accounts

    def load(self, account_id: UUID, history: Sequence[Movement]) -> None:
        """Rebuild one account's state from its legs (oldest first), replacing what it had."""
        account = _Account()
        for movement in history:
            if movement.account_id != account_id:
                raise ValueError(f"leg {movement.transaction_id} is not of account {account_id}")
            account.observe(movement.transaction_id, _leg_of(movement))
        self._put(account_id, account)

    def observe(self, movement: Movement) -> None:
        """Add ``movement`` to its account's state (a transaction id seen before: no change)."""
        account = self._accounts.get(movement.account_id)
        if account is None:
            account = _Account()
            self._put(movement.account_id, account)
        else:
            self._accounts.move_to_end(movement.account_id)
        account.observe(movement.transaction_id, _leg_of(movement))

    def features(self, movement: Movement) -> Features:
        """The features of ``movement`` from its account's state before it (no change)."""
        account = self._accounts.get(movement.account_id)
        if account is not None:
            self._accounts.move_to_end(movement.account_id)
        return _features(movement, account)

    def _put(self, account_id: UUID, account: _Account) -> None:
        self._accounts[account_id] = account
        self._accounts.move_to_end(account_id)
        while len(self._accounts) > self._max_accounts:
            self._accounts.popitem(last=False)


def _features(movement: Movement, account: _Account | None) -> Features:
    leg = _leg_of(movement)
    now = leg.at
    count_1m = count_1h = count_24h = 0
    sum_1m = sum_1h = sum_24h = 0.0
    declines_1h = tiny_1h = 0
    senders: set[UUID] = set()
    receivers: set[UUID] = set()
    same_direction: list[float] = []
    known: set[UUID] = set()
    near_7d = 0
    last_at: float | None = None
    if account is not None:
        for old in reversed(account.recent):
            age = now - old.at
            if age > DAY:
                break
            count_24h += 1
            amount = 0.0 if old.failed else old.amount
            sum_24h += amount
            if old.counterparty is not None and not old.failed:
                (receivers if old.outflow else senders).add(old.counterparty)
            if age <= HOUR:
                count_1h += 1
                sum_1h += amount
                declines_1h += old.failed
                tiny_1h += old.tiny and old.outflow
                if age <= MINUTE:
                    count_1m += 1
                    sum_1m += amount
        cutoff = now - HISTORY_SECONDS
        for old in account.history:
            if old.at < cutoff:
                continue
            last_at = old.at if last_at is None else max(last_at, old.at)
            if old.failed:
                continue
            if old.counterparty is not None and now - old.at > DAY:
                known.add(old.counterparty)
            if old.outflow == leg.outflow:
                same_direction.append(old.amount_log)
            if old.near and now - old.at <= WEEK:
                near_7d += 1
    counterparty = leg.counterparty
    if counterparty is not None:
        (receivers if leg.outflow else senders).add(counterparty)
    history_count = len(same_direction)
    mean_log = deviation_log = zscore = 0.0
    if history_count:
        mean_log = math.fsum(same_direction) / history_count
        spread = math.sqrt(
            math.fsum((value - mean_log) ** 2 for value in same_direction) / history_count
        )
        deviation_log = leg.amount_log - mean_log
        zscore = deviation_log / max(spread, SPREAD_FLOOR)
    since_last = HISTORY_SECONDS if last_at is None else max(0.0, now - last_at)
    at = movement.created_at.astimezone(UTC)
    night = NIGHT_HOURS[0] <= at.hour < NIGHT_HOURS[1]
    return Features(
        amount_log=leg.amount_log,
        is_outflow=float(leg.outflow),
        is_transfer=float(
            movement.kind in (TransactionType.TRANSFER_IN, TransactionType.TRANSFER_OUT)
        ),
        is_tiny=float(leg.tiny),
        near_threshold=float(leg.near),
        count_1m=float(count_1m),
        count_1h=float(count_1h),
        count_24h=float(count_24h),
        sum_1m_log=math.log10(1.0 + sum_1m),
        sum_1h_log=math.log10(1.0 + sum_1h),
        sum_24h_log=math.log10(1.0 + sum_24h),
        seconds_since_last=since_last,
        quiet_log=math.log10(1.0 + since_last),
        mean_log=mean_log,
        deviation_log=deviation_log,
        zscore=zscore,
        history_count=float(history_count),
        new_counterparty=float(counterparty is not None and counterparty not in known),
        hour_of_day=at.hour + at.minute / 60.0 + at.second / 3_600.0,
        night=float(night),
        declines_1h=float(declines_1h),
        tiny_outflows_1h=float(tiny_1h),
        counterparties_in_24h=float(len(senders)),
        counterparties_out_24h=float(len(receivers)),
        near_threshold_7d=float(near_7d),
    )
