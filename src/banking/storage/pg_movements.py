"""``LedgerStore.decide_movements`` on PostgreSQL: a group of debits, credits and transfers
decided with three statements whatever its size, instead of about eight per movement.

Where the rules live: in ``banking.ledger.decisions`` (DESIGN.md section 4), which
``banking.ledger.groups.decide_each`` runs item by item on SQLite and in the in-memory fake.
This module runs the same rules in two halves:

1. one read of every account of the group (``get_accounts``) and, per item,
   ``decisions.precheck``: existence, who may act, currency, an inactive account's decline,
   exactly as the decisions check them (one function, both paths);
2. one call of the PL/pgSQL function ``banking_decide_movements`` (migration 0004; 0007 and
   0010 redefined it) for the items that passed: it locks every balance of the group in
   account-id order, then per item checks the idempotency key, applies the conditional debit
   and the balance limit, and inserts the legs (with their metadata) and their journal rows,
   returning each item's outcome and balances;
3. one INSERT of the outbox rows, encoded here from the legs (``LegsRecorded`` through the
   store's encoder, as ``recording.record`` does), in item order.

Why a server-side function: the checks that need the locked balances must run between the
lock and the writes, item after item; from Python each is a round trip (the issue measured the
money path at 0.09x pgbench with about eight of them per transfer). The function keeps them on
the server, one call for the group. It is held to ``decide_each``'s outcomes, balances, legs,
journal and outbox rows by ``tests/storage/test_pg_movements.py`` and the store contract tests.

Errors: the raw asyncpg calls raise the driver's own exceptions, so they are wrapped here as
SQLAlchemy raises them for any other statement (``IntegrityError`` / ``DBAPIError`` with the
driver's error as ``orig``): the unit of work then retries deadlocks and outages and turns a
used key into ``ReferenceAlreadyUsed`` as usual. A key that another transaction commits while
this one runs (the function cannot see it; the insert then waits and fails with a unique
violation, which aborts the transaction) is, for a single item, ``ReferenceAlreadyUsed`` (the
caller replays it). For a group it is reported as a serialization failure (SQLSTATE 40001):
the unit of work runs the whole group again, and the function's key check then sees the
committed key and replays that item, while every other item is decided afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID, uuid4

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError

from banking.domain.clock import utc_now
from banking.domain.errors import (
    BankingError,
    InvariantViolated,
    ReferenceAlreadyUsed,
    ValidationFailed,
)
from banking.domain.records import (
    Balance,
    BalanceAfter,
    LedgerEvent,
    LegsRecorded,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.ledger.decisions import BALANCE_LIMIT_REASON, Decline, precheck
from banking.ledger.groups import Decided, GroupItem, group_account_ids
from banking.ledger.metadata import canonical_metadata
from banking.ledger.recording import balances_after, new_leg, transfer_legs
from banking.storage.tables import REFERENCE_KEY

if TYPE_CHECKING:
    from collections.abc import Callable

    from banking.storage.ledger_store import SqlLedgerStore

    OutboxEncoder = Callable[[LedgerEvent], list[dict[str, Any]]]

# asyncpg prepares each statement once per connection and keeps it (its statement cache).
_DECIDE: Final = (
    "SELECT r_status, r_failure_code, r_failure_reason, r_available_after, r_version_after,"
    " r_in_available_after, r_in_version_after, r_current_after, r_in_current_after"
    " FROM banking_decide_movements("
    "$1::text[], $2::uuid[], $3::uuid[], $4::numeric[], $5::uuid[], $6::uuid[], $7::uuid[],"
    " $8::uuid[], $9::text[], $10::text[], $11::uuid[], $12::text[], $13::text[],"
    " $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[], $19::text[])"
)
# The outbox's columns but its id, in the order of the statement's arrays. WITH ORDINALITY
# and ORDER BY: the outbox ids (the relay's order) follow the rows' order.
_OUTBOX_COLUMNS: Final = (
    "event_id",
    "topic",
    "event_key",
    "event_type",
    "schema_version",
    "payload",
    "trace_id",
    "created_at",
    "published_at",
)
_INSERT_OUTBOX: Final = (
    "INSERT INTO outbox (event_id, topic, event_key, event_type, schema_version, payload,"
    " trace_id, created_at, published_at)"
    " SELECT event_id, topic, event_key, event_type, schema_version, payload, trace_id,"
    " created_at, published_at"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::text[],"
    " $7::text[], $8::timestamptz[], $9::timestamptz[]) WITH ORDINALITY AS row (event_id,"
    " topic, event_key, event_type, schema_version, payload, trace_id, created_at,"
    " published_at, position) ORDER BY position"
)
# What a group race is reported as, so that the unit of work runs the group again.
_SERIALIZATION_FAILURE: Final = "40001"

_COMPLETED: Final = "completed"
_FAILED: Final = "failed"
_KEY_USED: Final = "key_used"
_OVER_LIMIT: Final = "over_limit"


@dataclass(frozen=True, slots=True)
class _Planned:
    """An item that passed the pre-checks, with the ids and time of what it may store."""

    position: int
    item: GroupItem
    decline: Decline | None
    leg_id: UUID
    in_leg_id: UUID | None
    log_id: UUID
    in_log_id: UUID | None
    at: datetime


async def decide_movements(
    store: SqlLedgerStore, encode_events: OutboxEncoder, items: Sequence[GroupItem]
) -> list[Decided]:
    """Decide ``items`` in ``store``'s unit of work (PostgreSQL), with the outcomes, rows and
    events ``decide_each`` gives: each item's initiating leg as stored, or the error that
    refused it (nothing of it stored). A single item whose key is used raises
    ``ReferenceAlreadyUsed``, as the unit of work does for ``decide_each``."""
    found = {
        account.account_id: account
        for account in await store.get_accounts(group_account_ids(items))
    }
    decided: list[Decided | None] = [None] * len(items)
    planned: list[_Planned] = []
    for position, item in enumerate(items):
        try:
            decline = precheck(item.actor, item.checked, found)
        except BankingError as error:
            decided[position] = error
            continue
        planned.append(_plan(position, item, decline))
    if planned:
        # The SQLAlchemy statement above began the transaction: these run inside it.
        raw = await store.connection.get_raw_connection()
        connection: asyncpg.Connection = raw.driver_connection
        rows = await _call(connection, _DECIDE, _arguments(planned), single=len(items) == 1)
        if len(rows) != len(planned):
            raise InvariantViolated(f"{len(rows)} outcomes for {len(planned)} movements")
        events: list[LedgerEvent] = []
        for plan, row in zip(planned, rows, strict=True):
            legs = _legs(plan, row, single=len(items) == 1)
            if isinstance(legs, BankingError):
                decided[plan.position] = legs
                continue
            decided[plan.position] = legs[0]
            events.append(LegsRecorded(legs, plan.item.trace_id, _balances(legs, row)))
        outbox_rows = [row for event in events for row in encode_events(event)]
        if outbox_rows:
            columns = [[row[name] for row in outbox_rows] for name in _OUTBOX_COLUMNS]
            await _call(connection, _INSERT_OUTBOX, columns, single=len(items) == 1)
    return [_decided(outcome) for outcome in decided]


def _plan(position: int, item: GroupItem, decline: Decline | None) -> _Planned:
    checked = item.checked
    transfer = checked.kind is TransactionType.TRANSFER_OUT
    return _Planned(
        position=position,
        item=item,
        decline=decline,
        leg_id=checked.transaction_id or uuid4(),
        in_leg_id=uuid4() if transfer else None,
        log_id=uuid4(),
        in_log_id=uuid4() if transfer else None,
        at=utc_now(),
    )


def _arguments(planned: Sequence[_Planned]) -> list[list[Any]]:
    """The function's parallel arrays, in the order of its parameters."""
    checks = [plan.item.checked for plan in planned]
    return [
        [checked.kind.value for checked in checks],
        [checked.account_id for checked in checks],
        [checked.counterparty_id for checked in checks],
        [checked.amount for checked in checks],
        [plan.leg_id for plan in planned],
        [plan.in_leg_id for plan in planned],
        [plan.log_id for plan in planned],
        [plan.in_log_id for plan in planned],
        [checked.reference_id for checked in checks],
        [checked.fingerprint for checked in checks],
        [plan.item.actor.user_id for plan in planned],
        [checked.description for checked in checks],
        [checked.currency for checked in checks],
        [plan.item.trace_id for plan in planned],
        [plan.decline[0].value if plan.decline else None for plan in planned],
        [plan.decline[1] if plan.decline else None for plan in planned],
        [plan.item.actor.username for plan in planned],
        [plan.at for plan in planned],
        # JSON objects, stored as jsonb on both legs (migration 0010).
        [canonical_metadata(checked.metadata) for checked in checks],
    ]


def _legs(
    plan: _Planned, row: asyncpg.Record, *, single: bool
) -> tuple[Transaction, ...] | BankingError:
    """The legs the function stored for ``plan`` (built as ``decisions`` builds them), or the
    error that refused it."""
    status = row["r_status"]
    checked = plan.item.checked
    if status == _KEY_USED:
        error = ReferenceAlreadyUsed("the idempotency key is already used")
        if single:
            raise error
        return error
    if status == _OVER_LIMIT:
        return ValidationFailed(BALANCE_LIMIT_REASON, field="amount")
    if status == _FAILED:
        return (
            new_leg(
                checked,
                status=TransactionStatus.FAILED,
                created_at=plan.at,
                transaction_id=plan.leg_id,
                failure=(row["r_failure_code"], row["r_failure_reason"]),
            ),
        )
    if status != _COMPLETED:
        raise InvariantViolated(f"unknown outcome {status!r} of banking_decide_movements")
    balance_after, destination_after = _afters(row)
    if checked.kind is not TransactionType.TRANSFER_OUT:
        return (
            new_leg(
                checked,
                status=TransactionStatus.COMPLETED,
                created_at=plan.at,
                transaction_id=plan.leg_id,
                balance_after=balance_after,
            ),
        )
    first = new_leg(
        checked, status=TransactionStatus.COMPLETED, created_at=plan.at, transaction_id=plan.leg_id
    )
    if plan.in_leg_id is None:
        raise InvariantViolated("a transfer needs the id of its receiving leg")
    out_leg, in_leg = transfer_legs(first, plan.at, balance_after, destination_after)
    # The receiving leg's id was chosen before the call (the function stored it).
    return (
        replace(out_leg, related_transaction_id=plan.in_leg_id),
        replace(in_leg, transaction_id=plan.in_leg_id),
    )


def _afters(row: asyncpg.Record) -> tuple[BalanceAfter, BalanceAfter]:
    """The (source) account's and a transfer's destination's balances after the item, as the
    function returned them (NULL where it touched no balance)."""
    return (
        BalanceAfter(row["r_available_after"], row["r_version_after"], row["r_current_after"]),
        BalanceAfter(
            row["r_in_available_after"], row["r_in_version_after"], row["r_in_current_after"]
        ),
    )


def _balances(legs: tuple[Transaction, ...], row: asyncpg.Record) -> tuple[Balance, ...]:
    """The balances after the legs as the function read them (current and available), for
    their balance events."""
    return balances_after(zip(legs, _afters(row), strict=False))


def _decided(outcome: Decided | None) -> Decided:
    if outcome is None:
        raise InvariantViolated("a movement of the group was not decided")
    return outcome


async def _call(
    connection: asyncpg.Connection, statement: str, arguments: list[list[Any]], *, single: bool
) -> list[asyncpg.Record]:
    """Run ``statement`` on the raw connection, its errors raised as SQLAlchemy raises them."""
    try:
        rows: list[asyncpg.Record] = await connection.fetch(statement, *arguments)
    except asyncpg.UniqueViolationError as error:
        if not single and error.constraint_name == REFERENCE_KEY:
            raise DBAPIError(statement, None, _GroupRaced(error)) from error
        raise IntegrityError(statement, None, error) from error
    except asyncpg.IntegrityConstraintViolationError as error:
        raise IntegrityError(statement, None, error) from error
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise DBAPIError(statement, None, error) from error
    return rows


class _GroupRaced(Exception):
    """A key of the group was committed by another transaction during the call: the group is
    run again (a serialization failure for the unit of work), and then replays that item."""

    sqlstate = _SERIALIZATION_FAILURE

    def __init__(self, cause: asyncpg.UniqueViolationError) -> None:
        super().__init__(f"an idempotency key of the group was used concurrently: {cause}")
