"""A seeded simulator of a bank's customers, normal and fraudulent (like PaySim for mobile
money): the labelled data set this domain does not have, for training, evaluation, and for
driving the real API in a test.

The bank has ``customers`` accounts (indices ``0 .. customers-1``) and, after them, a few
*outside* accounts (landlords, mule sources, fraudsters' destinations) that only ever appear as
counterparties. Normal behaviour per customer:

* a monthly salary (credit, 07:00-10:00), 2-4 monthly bills (debits, posted 03:00-05:00);
* card spend (debits) with a daily rhythm (lunch and evening peaks, little at night) and a
  weekly one (more at weekends), about 1 % declined;
* transfers to 1-4 known friends (other customers), now and then to someone new; for half of
  them a monthly rent transfer to their landlord.

Fraud patterns (each incident on its own customer, after the first quarter of the period):

* ``card_testing``: a burst of 8-20 tiny debits (0.10-2.99) seconds apart, a third declined,
  then often one larger debit (the cash-out);
* ``account_takeover``: 2-5 days of silence, then at night 1-2 large transfers to a new
  outside account;
* ``structuring``: 5-9 deposits (credits) just under ``REPORTING_THRESHOLD`` over 1-3 days;
* ``mule``: transfers in from 6-14 distinct outside accounts within hours (fan-in), then 2-4
  transfers out to new outside accounts (fan-out).

``simulate_operations`` gives the plain operations (what the API is asked to do: account
index, kind, amount, counterparty index, time); ``simulate`` gives the legs the ledger would
hold (a transfer between two customers is two legs; a leg of an outside account is not
simulated). Everything is deterministic for a seed; amounts are ``Decimal`` with 2 places,
drawn as whole cents.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final
from uuid import UUID

from banking.domain.records import TransactionStatus, TransactionType
from banking.fraud.assessment import Movement
from banking.fraud.features import REPORTING_THRESHOLD

PATTERNS: Final = ("card_testing", "account_takeover", "structuring", "mule")
CURRENCY: Final = "USD"
DEFAULT_START: Final = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
CUSTOMERS_MAX: Final = 100_000
DAYS_MAX: Final = 366


class OperationKind(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"
    TRANSFER = "transfer"


@dataclass(frozen=True, slots=True)
class Operation:
    """One request to the bank: a debit or credit of ``account_index``, or a transfer from
    ``account_index`` to ``counterparty_index``. ``declined`` marks an attempt the simulation
    has fail (a declined card payment); through the real API the ledger decides."""

    at: datetime
    kind: OperationKind
    account_index: int
    amount: Decimal
    counterparty_index: int | None
    pattern: str | None
    declined: bool = False


@dataclass(frozen=True, slots=True)
class SimulatedMovement:
    """One leg of the simulation, with the pattern it belongs to (None: normal behaviour)."""

    movement: Movement
    pattern: str | None
    account_index: int
    counterparty_index: int | None
    operation_index: int

    @property
    def is_fraud(self) -> bool:
        return self.pattern is not None


@dataclass(frozen=True, slots=True)
class Simulation:
    """The operations, the account ids (customers first, then outside accounts) and legs."""

    customers: int
    account_ids: tuple[UUID, ...]
    operations: tuple[Operation, ...]
    movements: tuple[SimulatedMovement, ...]


def simulate(
    seed: int,
    customers: int,
    days: int,
    *,
    start: datetime = DEFAULT_START,
    incidents_per_pattern: int | None = None,
) -> list[SimulatedMovement]:
    """The legs of a seeded simulation, oldest first (see the module docstring)."""
    return list(
        run(
            seed, customers, days, start=start, incidents_per_pattern=incidents_per_pattern
        ).movements
    )


def run(
    seed: int,
    customers: int,
    days: int,
    *,
    start: datetime = DEFAULT_START,
    incidents_per_pattern: int | None = None,
) -> Simulation:
    """The whole simulation: operations, account ids and legs."""
    if not 2 <= customers <= CUSTOMERS_MAX:
        raise ValueError(f"customers must be in [2, {CUSTOMERS_MAX}]")
    if not 1 <= days <= DAYS_MAX:
        raise ValueError(f"days must be in [1, {DAYS_MAX}]")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    incidents = max(2, customers // 20) if incidents_per_pattern is None else incidents_per_pattern
    if incidents < 0 or 4 * incidents > customers:
        raise ValueError("incidents_per_pattern needs 4 distinct customers per incident")
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret
    world = _World(rng, customers, days, start)
    world.normal_behaviour()
    world.fraud(incidents)
    operations = world.finished()
    account_ids = tuple(_uuid(rng) for _ in range(world.accounts))
    return Simulation(
        customers, account_ids, tuple(operations), _legs(rng, operations, customers, account_ids)
    )


def _uuid(rng: random.Random) -> UUID:
    return UUID(int=rng.getrandbits(128), version=4)


def _cents(value: int) -> Decimal:
    return Decimal(max(1, value)).scaleb(-2)


def _lognormal_cents(rng: random.Random, median: float, sigma: float) -> Decimal:
    return _cents(_lognormal_int(rng, median, sigma))


def _lognormal_int(rng: random.Random, median: float, sigma: float) -> int:
    """Whole cents around ``median`` (in currency units), log-normally spread."""
    return max(1, round(median * 100 * math.exp(rng.gauss(0.0, sigma))))


def _around(rng: random.Random, cents: int, spread: float) -> Decimal:
    return _cents(round(cents * rng.uniform(1.0 - spread, 1.0 + spread)))


@dataclass(frozen=True, slots=True)
class _Profile:
    salary_cents: int
    salary_day: int
    bills: tuple[tuple[int, int], ...]  # (day of month, cents)
    card_rate_per_day: float
    card_median: float
    friends: tuple[int, ...]
    transfer_rate_per_day: float
    landlord: int | None
    rent_cents: int


_HOUR_WEIGHTS: Final = (
    # 00-05: little; lunch and evening peaks
    0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.0, 2.0, 2.0, 2.0, 3.0,
    5.0, 5.0, 3.0, 2.5, 3.0, 5.0, 6.0, 6.0, 4.0, 2.5, 1.5, 0.6,
)  # fmt: skip
_WEEKEND_FACTOR: Final = 1.4


class _World:
    """The operations being generated, and the outside accounts handed out so far."""

    def __init__(self, rng: random.Random, customers: int, days: int, start: datetime) -> None:
        self.rng = rng
        self.customers = customers
        self.days = days
        self.start = start
        self.accounts = customers
        self.operations: list[Operation] = []
        self.silent: list[tuple[int, datetime, datetime]] = []  # (customer, from, to)

    def outside(self) -> int:
        index = self.accounts
        self.accounts += 1
        return index

    def add(
        self,
        at: datetime,
        kind: OperationKind,
        account: int,
        amount: Decimal,
        counterparty: int | None = None,
        pattern: str | None = None,
        declined: bool = False,
    ) -> None:
        self.operations.append(
            Operation(at, kind, account, amount, counterparty, pattern, declined)
        )

    def at(self, day: int, hour: float) -> datetime:
        return self.start + timedelta(days=day, seconds=round(hour * 3_600))

    def normal_behaviour(self) -> None:
        rng = self.rng
        landlords = [self.outside() for _ in range(max(1, self.customers // 10))]
        profiles = [self._profile(customer, landlords) for customer in range(self.customers)]
        for day in range(self.days):
            date = self.start + timedelta(days=day)
            weekend = date.weekday() >= 5
            for customer, profile in enumerate(profiles):
                if date.day == profile.salary_day:
                    hour = rng.uniform(7.0, 10.0)
                    amount = _around(rng, profile.salary_cents, 0.02)
                    self.add(self.at(day, hour), OperationKind.CREDIT, customer, amount)
                for bill_day, bill in profile.bills:
                    if date.day == bill_day:
                        hour = rng.uniform(3.0, 5.0)
                        amount = _around(rng, bill, 0.05)
                        self.add(self.at(day, hour), OperationKind.DEBIT, customer, amount)
                if profile.landlord is not None and date.day == 1:
                    hour = rng.uniform(8.0, 11.0)
                    self.add(
                        self.at(day, hour),
                        OperationKind.TRANSFER,
                        customer,
                        _cents(profile.rent_cents),
                        profile.landlord,
                    )
                rate = profile.card_rate_per_day * (_WEEKEND_FACTOR if weekend else 1.0)
                for _ in range(_poisson(rng, rate)):
                    hour = rng.choices(range(24), _HOUR_WEIGHTS)[0] + rng.random()
                    amount = _lognormal_cents(rng, profile.card_median, 0.9)
                    self.add(
                        self.at(day, hour),
                        OperationKind.DEBIT,
                        customer,
                        amount,
                        declined=rng.random() < 0.01,
                    )
                for _ in range(_poisson(rng, profile.transfer_rate_per_day)):
                    hour = rng.uniform(8.0, 22.0)
                    if rng.random() < 0.05:
                        friend = rng.randrange(self.customers)  # someone new
                    else:
                        friend = rng.choice(profile.friends)
                    if friend == customer:
                        continue
                    amount = _lognormal_cents(rng, 60.0, 0.8)
                    self.add(self.at(day, hour), OperationKind.TRANSFER, customer, amount, friend)

    def _profile(self, customer: int, landlords: list[int]) -> _Profile:
        rng = self.rng
        friends = tuple(
            friend
            for friend in rng.sample(range(self.customers), min(self.customers, 5))
            if friend != customer
        )[: rng.randint(1, 4)]
        has_rent = rng.random() < 0.5
        return _Profile(
            salary_cents=_lognormal_int(rng, 3_500.0, 0.35),
            salary_day=rng.randint(1, 28),
            bills=tuple(
                (rng.randint(1, 28), _lognormal_int(rng, 80.0, 0.6))
                for _ in range(rng.randint(2, 4))
            ),
            card_rate_per_day=rng.uniform(0.8, 3.0),
            card_median=rng.uniform(15.0, 40.0),
            friends=friends,
            transfer_rate_per_day=rng.uniform(0.1, 0.35),
            landlord=rng.choice(landlords) if has_rent else None,
            rent_cents=_lognormal_int(rng, 1_000.0, 0.3),
        )

    def fraud(self, incidents: int) -> None:
        rng = self.rng
        victims = rng.sample(range(self.customers), 4 * incidents)
        first_day = self.days / 4
        last_day = max(first_day, self.days - 1.5)
        for number, customer in enumerate(victims):
            pattern = PATTERNS[number % len(PATTERNS)]
            when = self.start + timedelta(days=rng.uniform(first_day, last_day))
            if pattern == "card_testing":
                self._card_testing(customer, when)
            elif pattern == "account_takeover":
                self._account_takeover(customer, when)
            elif pattern == "structuring":
                self._structuring(customer, when)
            else:
                self._mule(customer, when)

    def _card_testing(self, customer: int, when: datetime) -> None:
        rng = self.rng
        at = when
        for _ in range(rng.randint(8, 20)):
            amount = _cents(rng.randint(10, 299))
            declined = rng.random() < 0.33
            self.add(at, OperationKind.DEBIT, customer, amount, None, "card_testing", declined)
            at += timedelta(seconds=rng.randint(5, 40))
        if rng.random() < 0.6:
            amount = _cents(rng.randint(20_000, 80_000))
            self.add(at, OperationKind.DEBIT, customer, amount, None, "card_testing")

    def _account_takeover(self, customer: int, when: datetime) -> None:
        rng = self.rng
        night = datetime.combine(when.date(), datetime.min.time(), UTC) + timedelta(
            hours=rng.uniform(0.5, 4.5)
        )
        quiet = timedelta(days=rng.uniform(2.0, 5.0))
        self.silent.append((customer, night - quiet, night + timedelta(hours=1)))
        destination = self.outside()
        at = night
        for _ in range(rng.randint(1, 2)):
            amount = _cents(rng.randint(150_000, 800_000))
            self.add(at, OperationKind.TRANSFER, customer, amount, destination, "account_takeover")
            at += timedelta(minutes=rng.uniform(2.0, 15.0))

    def _structuring(self, customer: int, when: datetime) -> None:
        rng = self.rng
        span_hours = rng.uniform(24.0, 72.0)
        count = rng.randint(5, 9)
        ceiling = int(REPORTING_THRESHOLD * 100) - 1
        for number in range(count):
            at = when + timedelta(hours=span_hours * number / count + rng.uniform(0.0, 2.0))
            at = at.replace(hour=rng.randint(9, 17))
            amount = _cents(rng.randint(900_000, ceiling - 900))
            self.add(at, OperationKind.CREDIT, customer, amount, None, "structuring")

    def _mule(self, customer: int, when: datetime) -> None:
        rng = self.rng
        at = when
        received = 0
        for _ in range(rng.randint(6, 14)):
            cents = rng.randint(20_000, 200_000)
            received += cents
            source = self.outside()
            self.add(at, OperationKind.TRANSFER, source, _cents(cents), customer, "mule")
            at += timedelta(minutes=rng.uniform(5.0, 60.0))
        at += timedelta(minutes=rng.uniform(30.0, 180.0))
        outgoing = rng.randint(2, 4)
        for _ in range(outgoing):
            amount = _cents(received * 9 // (10 * outgoing))
            self.add(at, OperationKind.TRANSFER, customer, amount, self.outside(), "mule")
            at += timedelta(minutes=rng.uniform(1.0, 20.0))

    def finished(self) -> list[Operation]:
        """The operations in time order, without the normal ones of a silenced account and
        without any outside the simulated period."""
        end = self.start + timedelta(days=self.days)

        def silenced(operation: Operation) -> bool:
            return operation.pattern is None and any(
                customer in (operation.account_index, operation.counterparty_index)
                and begin <= operation.at < until
                for customer, begin, until in self.silent
            )

        kept = [op for op in self.operations if op.at < end and not silenced(op)]
        order = sorted(range(len(kept)), key=lambda index: (kept[index].at, index))
        return [kept[index] for index in order]


def _poisson(rng: random.Random, rate: float) -> int:
    """Knuth's method (rates here are small)."""
    limit = math.exp(-rate)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _legs(
    rng: random.Random,
    operations: list[Operation],
    customers: int,
    account_ids: tuple[UUID, ...],
) -> tuple[SimulatedMovement, ...]:
    legs: list[SimulatedMovement] = []

    def leg(
        index: int,
        operation: Operation,
        account: int,
        kind: TransactionType,
        counterparty: int | None,
    ) -> None:
        status = TransactionStatus.FAILED if operation.declined else TransactionStatus.COMPLETED
        movement = Movement(
            transaction_id=_uuid(rng),
            account_id=account_ids[account],
            kind=kind,
            amount=operation.amount,
            currency=CURRENCY,
            counterparty_account_id=None if counterparty is None else account_ids[counterparty],
            created_at=operation.at,
            status=status,
        )
        legs.append(SimulatedMovement(movement, operation.pattern, account, counterparty, index))

    for index, operation in enumerate(operations):
        source = operation.account_index
        if operation.kind is OperationKind.DEBIT:
            leg(index, operation, source, TransactionType.DEBIT, None)
        elif operation.kind is OperationKind.CREDIT:
            leg(index, operation, source, TransactionType.CREDIT, None)
        else:
            destination = operation.counterparty_index
            if destination is None:
                raise ValueError("a transfer needs a counterparty")
            if source < customers:
                leg(index, operation, source, TransactionType.TRANSFER_OUT, destination)
            if destination < customers:
                leg(index, operation, destination, TransactionType.TRANSFER_IN, source)
    return tuple(legs)
