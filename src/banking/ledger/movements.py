"""Debits, credits and transfers: where money moves, is declined, or is replayed.

Each movement is one database transaction: conditional balance update, legs, log rows and
outbox rows, then commit. Idempotency follows Stripe: the key is ``(account, reference_id)``
of the initiating leg; a retry with the same parameters gets the original outcome (declines
included), different parameters get ``IDEMPOTENCY_CONFLICT``. Concurrent duplicates race on
the unique index: exactly one commits, the others roll back and replay it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.errors import (
    AccountInactiveDeclined,
    AccountNotFound,
    BankingError,
    IdempotencyConflict,
    InsufficientFundsDeclined,
    InvariantViolated,
    TransactionNotFound,
    ValidationFailed,
)
from banking.domain.money import (
    check_amount_for_currency,
    format_amount,
    normalize_currency,
    require_same_currency,
)
from banking.domain.roles import Actor
from banking.events.outbox import events_for_legs
from banking.ledger.access import (
    require_can_credit,
    require_can_debit,
    require_moves_money,
    require_visible,
)
from banking.ledger.models import (
    Account,
    DebitOrCredit,
    MovementResult,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.storage import repositories as repo
from banking.storage.database import Database, is_unique_violation
from banking.storage.types import utc_now

REFERENCE_ID_LENGTH_MAX = 255
DESCRIPTION_LENGTH_MAX = 500
_BALANCE_LIMIT_REASON = "the resulting balance would exceed the ledger's limit of 10^16"


@dataclass(frozen=True, slots=True)
class _Checked:
    """A request after validation: what the fingerprint and the legs are made from."""

    kind: TransactionType
    account_id: UUID
    counterparty_id: UUID | None
    amount: Decimal
    currency: str
    description: str | None
    reference_id: str
    fingerprint: str


class MovementObserver:
    """Told about every outcome (metrics); the default does nothing."""

    def movement(self, kind: str, status: str, currency: str, amount: Decimal) -> None:
        pass

    def declined(self, kind: str, reason: str) -> None:
        pass

    def replayed(self, kind: str) -> None:
        pass


class MovementService:
    def __init__(self, database: Database, observer: MovementObserver | None = None) -> None:
        self._database = database
        self._observer = observer or MovementObserver()

    # --- public use cases ----------------------------------------------------------------

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        require_moves_money(actor)
        checked = _check(TransactionType.DEBIT, request.account_id, None, request)

        async def work(connection: AsyncConnection) -> Transaction:
            account = require_can_debit(
                actor, await repo.get_account(connection, checked.account_id)
            )
            require_same_currency(account.currency, checked.currency)
            declined = _inactive_reason(account)
            balance_after = None
            if declined is None:
                now = utc_now()
                balance_after = await repo.apply_debit(
                    connection, checked.account_id, checked.amount, now
                )
                if balance_after is None:
                    declined = (InsufficientFundsDeclined.code, "insufficient funds")
            return await self._record_single(
                connection, actor, checked, balance_after, declined, trace_id
            )

        return await self._execute(actor, checked, work)

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        require_can_credit(actor)
        checked = _check(TransactionType.CREDIT, request.account_id, None, request)

        async def work(connection: AsyncConnection) -> Transaction:
            account = require_visible(actor, await repo.get_account(connection, checked.account_id))
            require_same_currency(account.currency, checked.currency)
            declined = _inactive_reason(account)
            balance_after = None
            if declined is None:
                balance_after = await repo.apply_credit(
                    connection, checked.account_id, checked.amount, utc_now()
                )
                if balance_after is None:
                    raise ValidationFailed(_BALANCE_LIMIT_REASON, field="amount")
            return await self._record_single(
                connection, actor, checked, balance_after, declined, trace_id
            )

        return await self._execute(actor, checked, work)

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        require_moves_money(actor)
        if request.source_account_id == request.destination_account_id:
            raise ValidationFailed(
                "source and destination accounts must be different",
                field="destination_account_id",
            )
        checked = _check(
            TransactionType.TRANSFER_OUT,
            request.source_account_id,
            request.destination_account_id,
            request,
        )
        destination_id = request.destination_account_id

        async def work(connection: AsyncConnection) -> Transaction:
            found = {
                account.account_id: account
                for account in await repo.get_accounts(
                    connection, [checked.account_id, destination_id]
                )
            }
            source = require_can_debit(actor, found.get(checked.account_id))
            destination = found.get(destination_id)
            if destination is None:
                raise AccountNotFound("destination account not found")
            require_same_currency(source.currency, checked.currency)
            require_same_currency(destination.currency, checked.currency)
            declined = _inactive_reason(source) or _inactive_reason(destination)
            if declined is not None:
                return await self._record_single(
                    connection, actor, checked, None, declined, trace_id
                )
            await repo.lock_balances(connection, [checked.account_id, destination_id])
            now = utc_now()
            source_after = await repo.apply_debit(
                connection, checked.account_id, checked.amount, now
            )
            if source_after is None:
                declined = (InsufficientFundsDeclined.code, "insufficient funds")
                return await self._record_single(
                    connection, actor, checked, None, declined, trace_id
                )
            destination_after = await repo.apply_credit(
                connection, destination_id, checked.amount, now
            )
            if destination_after is None:
                raise ValidationFailed(_BALANCE_LIMIT_REASON, field="amount")
            out_leg, in_leg = _transfer_legs(checked, now, source_after, destination_after)
            await self._store(connection, actor, checked, [out_leg, in_leg], trace_id)
            return out_leg

        return await self._execute(actor, checked, work)

    async def get_transaction(self, actor: Actor, transaction_id: UUID) -> Transaction:
        async with self._database.read() as connection:
            leg = await repo.get_transaction(connection, transaction_id)
            if leg is None:
                raise TransactionNotFound("transaction not found")
            try:
                require_visible(actor, await repo.get_account(connection, leg.account_id))
            except AccountNotFound as error:
                raise TransactionNotFound("transaction not found") from error
        return leg

    # --- the shared path ------------------------------------------------------------------

    async def _execute(
        self,
        actor: Actor,
        checked: _Checked,
        work: Callable[[AsyncConnection], Awaitable[Transaction]],
    ) -> MovementResult:
        try:
            leg = await self._database.run_in_transaction(work)
            replayed = False
        except IntegrityError as error:
            if not is_unique_violation(error):
                raise
            # Someone (a retry or a concurrent duplicate) already used this key: replay it.
            leg = await self._replay(checked)
            replayed = True
            self._observer.replayed(checked.kind.value)
        if not replayed:
            self._observer.movement(checked.kind.value, leg.status.value, leg.currency, leg.amount)
            if leg.failure_code is not None:
                self._observer.declined(checked.kind.value, leg.failure_code)
        return _outcome(leg, replayed=replayed)

    async def _replay(self, checked: _Checked) -> Transaction:
        async with self._database.read() as connection:
            found = await repo.find_initiating_leg(
                connection, checked.account_id, checked.reference_id
            )
        if found is None:
            raise InvariantViolated("unique violation without a leg holding the key")
        leg, fingerprint = found
        if fingerprint != checked.fingerprint:
            raise IdempotencyConflict(
                "reference_id was already used with different parameters",
                transaction_id=leg.transaction_id,
            )
        return leg

    async def _record_single(
        self,
        connection: AsyncConnection,
        actor: Actor,
        checked: _Checked,
        balance_after: tuple[Decimal, int] | None,
        declined: tuple[str, str] | None,
        trace_id: str | None,
    ) -> Transaction:
        """Store the one leg of a debit or credit, or the declined leg of any movement."""
        completed = declined is None
        if completed and balance_after is None:
            raise InvariantViolated("a completed leg needs the balance after it")
        leg = Transaction(
            transaction_id=uuid4(),
            account_id=checked.account_id,
            transaction_type=checked.kind,
            amount=checked.amount,
            currency=checked.currency,
            description=checked.description,
            reference_id=checked.reference_id,
            status=TransactionStatus.COMPLETED if completed else TransactionStatus.FAILED,
            created_at=utc_now(),
            related_transaction_id=None,
            counterparty_account_id=checked.counterparty_id,
            failure_code=declined[0] if declined else None,
            failure_reason=declined[1] if declined else None,
            available_balance_after=balance_after[0] if balance_after else None,
            balance_version_after=balance_after[1] if balance_after else None,
        )
        await self._store(connection, actor, checked, [leg], trace_id)
        return leg

    @staticmethod
    async def _store(
        connection: AsyncConnection,
        actor: Actor,
        checked: _Checked,
        legs: list[Transaction],
        trace_id: str | None,
    ) -> None:
        await repo.insert_transactions(
            connection, legs, fingerprint=checked.fingerprint, created_by=actor.user_id
        )
        await repo.insert_logs(connection, [_log_row(leg, actor, trace_id) for leg in legs])
        await repo.insert_outbox(connection, events_for_legs(legs, trace_id=trace_id))


# --- pure helpers ------------------------------------------------------------------------


def _check(
    kind: TransactionType,
    account_id: UUID,
    counterparty_id: UUID | None,
    request: DebitOrCredit | TransferRequest,
) -> _Checked:
    currency = normalize_currency(request.currency)
    amount = check_amount_for_currency(request.amount, currency)
    description = request.description
    if description is not None and len(description) > DESCRIPTION_LENGTH_MAX:
        raise ValidationFailed(
            f"description is longer than {DESCRIPTION_LENGTH_MAX} characters", field="description"
        )
    reference_id = request.reference_id
    if reference_id is None:
        reference_id = f"auto-{uuid4()}"
    elif (
        not reference_id
        or len(reference_id) > REFERENCE_ID_LENGTH_MAX
        or not reference_id.isprintable()
    ):
        raise ValidationFailed(
            f"reference_id must be 1 to {REFERENCE_ID_LENGTH_MAX} printable characters",
            field="reference_id",
        )
    fingerprint = hashlib.sha256(
        "\x1f".join(
            [
                kind.value,
                str(account_id),
                str(counterparty_id or ""),
                format_amount(amount),
                currency,
                description or "",
            ]
        ).encode()
    ).hexdigest()
    return _Checked(
        kind, account_id, counterparty_id, amount, currency, description, reference_id, fingerprint
    )


def _inactive_reason(account: Account) -> tuple[str, str] | None:
    if account.is_active:
        return None
    return (AccountInactiveDeclined.code, f"account {account.account_number} is not active")


def _transfer_legs(
    checked: _Checked,
    at: Any,
    source_after: tuple[Decimal, int],
    destination_after: tuple[Decimal, int],
) -> tuple[Transaction, Transaction]:
    if checked.counterparty_id is None:
        raise InvariantViolated("a transfer needs a destination")
    out_id, in_id = uuid4(), uuid4()
    common: dict[str, Any] = {
        "amount": checked.amount,
        "currency": checked.currency,
        "description": checked.description,
        "reference_id": checked.reference_id,
        "status": TransactionStatus.COMPLETED,
        "created_at": at,
        "failure_code": None,
        "failure_reason": None,
    }
    out_leg = Transaction(
        transaction_id=out_id,
        account_id=checked.account_id,
        transaction_type=TransactionType.TRANSFER_OUT,
        related_transaction_id=in_id,
        counterparty_account_id=checked.counterparty_id,
        available_balance_after=source_after[0],
        balance_version_after=source_after[1],
        **common,
    )
    in_leg = Transaction(
        transaction_id=in_id,
        account_id=checked.counterparty_id,
        transaction_type=TransactionType.TRANSFER_IN,
        related_transaction_id=out_id,
        counterparty_account_id=checked.account_id,
        available_balance_after=destination_after[0],
        balance_version_after=destination_after[1],
        **common,
    )
    return out_leg, in_leg


def _log_row(leg: Transaction, actor: Actor, trace_id: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"amount": format_amount(leg.amount), "trace_id": trace_id}
    if leg.available_balance_after is not None:
        metadata["available_balance_after"] = format_amount(leg.available_balance_after)
    if leg.failure_code is not None:
        metadata["failure_code"] = leg.failure_code
        metadata["failure_reason"] = leg.failure_reason
    return {
        "log_id": uuid4(),
        "transaction_id": leg.transaction_id,
        "event_type": leg.status.value,
        "metadata": metadata,
        "created_at": leg.created_at,
        "created_by": actor.username,
    }


def _outcome(leg: Transaction, *, replayed: bool) -> MovementResult:
    """A completed leg is the result; a failed one is raised as its decline, replay or not."""
    if leg.status is TransactionStatus.FAILED:
        error: BankingError
        if leg.failure_code == AccountInactiveDeclined.code:
            error = AccountInactiveDeclined(
                leg.failure_reason or "account is not active", transaction_id=leg.transaction_id
            )
        else:
            error = InsufficientFundsDeclined(
                leg.failure_reason or "insufficient funds", transaction_id=leg.transaction_id
            )
        error.replayed = replayed
        raise error
    return MovementResult(transaction=leg, replayed=replayed)
