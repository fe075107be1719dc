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
from dataclasses import dataclass, replace
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
from banking.domain.records import (
    Account,
    Command,
    DebitOrCredit,
    MovementResult,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.events.outbox import command_event, events_for_legs, rejection_event
from banking.ledger.access import (
    require_can_credit,
    require_can_debit,
    require_moves_money,
    require_visible,
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
    # Set for a command applied asynchronously: the id of its pending leg.
    transaction_id: UUID | None = None


class MovementObserver:
    """Told about every outcome (metrics); the default does nothing."""

    def movement(self, kind: str, status: str, currency: str, amount: Decimal) -> None:
        pass

    def declined(self, kind: str, reason: str) -> None:
        pass

    def replayed(self, kind: str) -> None:
        pass


class BalanceListener:
    """Told after each commit that changed balances, before the caller is answered, which
    accounts changed (the balance cache drops them, so a client never reads its own write
    stale). The default does nothing. It must not raise: the money has already moved."""

    async def balances_changed(self, account_ids: list[UUID]) -> None:
        pass


class MovementService:
    def __init__(
        self,
        database: Database,
        observer: MovementObserver | None = None,
        balance_listener: BalanceListener | None = None,
    ) -> None:
        self._database = database
        self._observer = observer or MovementObserver()
        self._balance_listener = balance_listener or BalanceListener()

    # --- public use cases ----------------------------------------------------------------

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        require_moves_money(actor)
        checked = _check(TransactionType.DEBIT, request.account_id, None, request)
        return _outcome(
            *await self._run(
                checked, lambda connection: self._debit(connection, actor, checked, None, trace_id)
            )
        )

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        require_can_credit(actor)
        checked = _check(TransactionType.CREDIT, request.account_id, None, request)
        return _outcome(
            *await self._run(
                checked, lambda connection: self._credit(connection, actor, checked, None, trace_id)
            )
        )

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        require_moves_money(actor)
        checked = _check_transfer(request)
        return _outcome(
            *await self._run(
                checked,
                lambda connection: self._transfer(connection, actor, checked, None, trace_id),
            )
        )

    # --- the decisions, shared by the synchronous and the asynchronous paths ---------------

    async def _debit(
        self,
        connection: AsyncConnection,
        actor: Actor,
        checked: _Checked,
        pending: Transaction | None,
        trace_id: str | None,
    ) -> Transaction:
        account = require_can_debit(actor, await repo.get_account(connection, checked.account_id))
        require_same_currency(account.currency, checked.currency)
        declined = _inactive_reason(account)
        balance_after = None
        if declined is None:
            balance_after = await repo.apply_debit(
                connection, checked.account_id, checked.amount, utc_now()
            )
            if balance_after is None:
                declined = (InsufficientFundsDeclined.code, "insufficient funds")
        return await self._record_single(
            connection, actor, checked, balance_after, declined, pending, trace_id
        )

    async def _credit(
        self,
        connection: AsyncConnection,
        actor: Actor,
        checked: _Checked,
        pending: Transaction | None,
        trace_id: str | None,
    ) -> Transaction:
        require_can_credit(actor)
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
            connection, actor, checked, balance_after, declined, pending, trace_id
        )

    async def _transfer(
        self,
        connection: AsyncConnection,
        actor: Actor,
        checked: _Checked,
        pending: Transaction | None,
        trace_id: str | None,
    ) -> Transaction:
        destination_id = checked.counterparty_id
        if destination_id is None:
            raise InvariantViolated("a transfer needs a destination")
        found = {
            account.account_id: account
            for account in await repo.get_accounts(connection, [checked.account_id, destination_id])
        }
        source = require_can_debit(actor, found.get(checked.account_id))
        destination = found.get(destination_id)
        if destination is None:
            raise AccountNotFound("destination account not found")
        require_same_currency(source.currency, checked.currency)
        require_same_currency(destination.currency, checked.currency)
        inactive = _inactive_reason(source) or _inactive_reason(destination)
        if inactive is not None:
            return await self._record_single(
                connection, actor, checked, None, inactive, pending, trace_id
            )
        await repo.lock_balances(connection, [checked.account_id, destination_id])
        now = utc_now()
        source_after = await repo.apply_debit(connection, checked.account_id, checked.amount, now)
        if source_after is None:
            declined = (InsufficientFundsDeclined.code, "insufficient funds")
            return await self._record_single(
                connection, actor, checked, None, declined, pending, trace_id
            )
        destination_after = await repo.apply_credit(connection, destination_id, checked.amount, now)
        if destination_after is None:
            raise ValidationFailed(_BALANCE_LIMIT_REASON, field="amount")
        out_leg, in_leg = _transfer_legs(checked, now, source_after, destination_after, pending)
        await self._store(connection, actor, checked, [out_leg, in_leg], pending, trace_id)
        return out_leg

    # --- asynchronous commands ---------------------------------------------------------

    async def submit(
        self,
        actor: Actor,
        kind: TransactionType,
        request: DebitOrCredit | TransferRequest,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        """Accept a debit, credit or transfer for asynchronous processing: in one transaction a
        ``pending`` leg and the command event on ``banking.transactions.submitted``. The same
        checks as the synchronous path run now, so a request that cannot succeed is refused at
        once; funds are checked when the command is applied."""
        checked = self._check_command(actor, kind, request)

        async def work(connection: AsyncConnection) -> Transaction:
            await self._check_accounts(connection, actor, checked)
            leg = _pending_leg(checked, uuid4())
            await repo.insert_transactions(
                connection, [leg], fingerprint=checked.fingerprint, created_by=actor.user_id
            )
            await repo.insert_logs(connection, [_log_row(leg, actor, trace_id)])
            await repo.insert_outbox(connection, [command_event(leg, actor, trace_id=trace_id)])
            return leg

        leg, replayed = await self._run(checked, work)
        return MovementResult(transaction=leg, replayed=replayed)

    async def apply_command(self, command: Command) -> Transaction | None:
        """Apply a submitted command exactly once: a pending leg is finished in place (completed
        or failed), a leg that is no longer pending is left alone, and a command with no leg
        (produced by another service) runs like a synchronous request, idempotent by its
        reference. Business failures are final: recorded as a failed leg or a rejection event.
        Technical failures (database down) propagate, for the caller to retry."""
        try:
            checked = replace(
                self._check_command(command.actor, command.kind, command.request),
                transaction_id=command.transaction_id,
            )
        except BankingError as error:
            await self._reject(command, error)
            return None
        decide = {
            TransactionType.DEBIT: self._debit,
            TransactionType.CREDIT: self._credit,
            TransactionType.TRANSFER_OUT: self._transfer,
        }[command.kind]

        async def work(connection: AsyncConnection) -> Transaction:
            pending = await repo.get_transaction(
                connection, command.transaction_id, for_update=True
            )
            if pending is not None and pending.status is not TransactionStatus.PENDING:
                return pending
            return await decide(connection, command.actor, checked, pending, command.trace_id)

        try:
            leg, _ = await self._run(checked, work)
        except BankingError as error:
            await self._reject(command, error)
            return None
        return leg

    async def _reject(self, command: Command, error: BankingError) -> None:
        """Record a command that can never succeed: its pending leg fails with the error's code
        (or, with no leg, a rejection event says so)."""

        async def work(connection: AsyncConnection) -> None:
            pending = await repo.get_transaction(
                connection, command.transaction_id, for_update=True
            )
            if pending is None:
                await repo.insert_outbox(
                    connection, [rejection_event(command, error.code, error.message)]
                )
                return
            if pending.status is not TransactionStatus.PENDING:
                return
            failed = replace(
                pending,
                status=TransactionStatus.FAILED,
                failure_code=error.code,
                failure_reason=error.message[:DESCRIPTION_LENGTH_MAX],
            )
            await repo.finish_pending_leg(connection, failed)
            await repo.insert_logs(connection, [_log_row(failed, command.actor, command.trace_id)])
            await repo.insert_outbox(
                connection, events_for_legs([failed], trace_id=command.trace_id)
            )

        await self._database.run_in_transaction(work)
        self._observer.declined(command.kind.value, error.code)

    @staticmethod
    def _check_command(
        actor: Actor, kind: TransactionType, request: DebitOrCredit | TransferRequest
    ) -> _Checked:
        if kind is TransactionType.CREDIT:
            require_can_credit(actor)
        else:
            require_moves_money(actor)
        if kind is TransactionType.TRANSFER_OUT:
            if not isinstance(request, TransferRequest):
                raise InvariantViolated("a transfer command needs a TransferRequest")
            return _check_transfer(request)
        if not isinstance(request, DebitOrCredit) or kind not in (
            TransactionType.DEBIT,
            TransactionType.CREDIT,
        ):
            raise InvariantViolated(f"no command for {kind.value}")
        return _check(kind, request.account_id, None, request)

    @staticmethod
    async def _check_accounts(connection: AsyncConnection, actor: Actor, checked: _Checked) -> None:
        """Visibility, existence and currency, as the synchronous path checks them."""
        ids = [checked.account_id] + ([checked.counterparty_id] if checked.counterparty_id else [])
        found = {a.account_id: a for a in await repo.get_accounts(connection, ids)}
        if checked.kind is TransactionType.CREDIT:
            account = require_visible(actor, found.get(checked.account_id))
        else:
            account = require_can_debit(actor, found.get(checked.account_id))
        require_same_currency(account.currency, checked.currency)
        if checked.counterparty_id is not None:
            destination = found.get(checked.counterparty_id)
            if destination is None:
                raise AccountNotFound("destination account not found")
            require_same_currency(destination.currency, checked.currency)

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

    async def _run(
        self,
        checked: _Checked,
        work: Callable[[AsyncConnection], Awaitable[Transaction]],
    ) -> tuple[Transaction, bool]:
        """Run a movement's transaction; on a used idempotency key, the stored leg instead."""
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
            if leg.status is TransactionStatus.COMPLETED:
                changed = [leg.account_id]
                if leg.counterparty_account_id is not None:
                    changed.append(leg.counterparty_account_id)
                await self._balance_listener.balances_changed(changed)
        return leg, replayed

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
        pending: Transaction | None,
        trace_id: str | None,
    ) -> Transaction:
        """Store the one leg of a debit or credit, or the declined leg of any movement."""
        completed = declined is None
        if completed and balance_after is None:
            raise InvariantViolated("a completed leg needs the balance after it")
        leg = Transaction(
            transaction_id=pending.transaction_id
            if pending
            else (checked.transaction_id or uuid4()),
            account_id=checked.account_id,
            transaction_type=checked.kind,
            amount=checked.amount,
            currency=checked.currency,
            description=checked.description,
            reference_id=checked.reference_id,
            status=TransactionStatus.COMPLETED if completed else TransactionStatus.FAILED,
            created_at=pending.created_at if pending else utc_now(),
            related_transaction_id=None,
            counterparty_account_id=checked.counterparty_id,
            failure_code=declined[0] if declined else None,
            failure_reason=declined[1] if declined else None,
            available_balance_after=balance_after[0] if balance_after else None,
            balance_version_after=balance_after[1] if balance_after else None,
        )
        await self._store(connection, actor, checked, [leg], pending, trace_id)
        return leg

    @staticmethod
    async def _store(
        connection: AsyncConnection,
        actor: Actor,
        checked: _Checked,
        legs: list[Transaction],
        pending: Transaction | None,
        trace_id: str | None,
    ) -> None:
        """Insert the legs (the pending leg of an async command is finished in place), their
        log rows and their events."""
        new_legs = [
            leg for leg in legs if pending is None or leg.transaction_id != pending.transaction_id
        ]
        if pending is not None and len(new_legs) == len(legs):
            raise InvariantViolated("the pending leg is not among the legs to store")
        if pending is not None:
            finished = next(leg for leg in legs if leg.transaction_id == pending.transaction_id)
            if not await repo.finish_pending_leg(connection, finished):
                raise InvariantViolated(f"leg {pending.transaction_id} is no longer pending")
        if new_legs:
            await repo.insert_transactions(
                connection, new_legs, fingerprint=checked.fingerprint, created_by=actor.user_id
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
    if description is not None and not description.isprintable():
        raise ValidationFailed(
            "description must not contain control characters", field="description"
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


def _check_transfer(request: TransferRequest) -> _Checked:
    if request.source_account_id == request.destination_account_id:
        raise ValidationFailed(
            "source and destination accounts must be different",
            field="destination_account_id",
        )
    return _check(
        TransactionType.TRANSFER_OUT,
        request.source_account_id,
        request.destination_account_id,
        request,
    )


def _pending_leg(checked: _Checked, transaction_id: UUID) -> Transaction:
    return Transaction(
        transaction_id=transaction_id,
        account_id=checked.account_id,
        transaction_type=checked.kind,
        amount=checked.amount,
        currency=checked.currency,
        description=checked.description,
        reference_id=checked.reference_id,
        status=TransactionStatus.PENDING,
        created_at=utc_now(),
        related_transaction_id=None,
        counterparty_account_id=checked.counterparty_id,
        failure_code=None,
        failure_reason=None,
        available_balance_after=None,
        balance_version_after=None,
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
    pending: Transaction | None,
) -> tuple[Transaction, Transaction]:
    if checked.counterparty_id is None:
        raise InvariantViolated("a transfer needs a destination")
    out_id = pending.transaction_id if pending else (checked.transaction_id or uuid4())
    in_id = uuid4()
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
        **(common | {"created_at": pending.created_at} if pending else common),
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


def _outcome(leg: Transaction, replayed: bool) -> MovementResult:
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
