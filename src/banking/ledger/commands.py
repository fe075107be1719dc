"""Asynchronous movements: accept now (a pending leg and its command, in one unit of work),
decide later with the same decisions as the synchronous path, exactly once."""

from __future__ import annotations

from dataclasses import replace

from banking.domain.errors import BankingError, Forbidden
from banking.domain.records import (
    Command,
    CommandOutcome,
    CommandRejected,
    CommandSubmitted,
    DebitOrCredit,
    LegsRecorded,
    MovementResult,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.ledger.checks import check_movement, require_may_move
from banking.ledger.decisions import DECISIONS, check_accounts
from banking.ledger.idempotency import run_once
from banking.ledger.ports import LedgerStore, UnitOfWork
from banking.ledger.recording import failed, journal_entry, pending_leg


async def submit(
    unit_of_work: UnitOfWork,
    actor: Actor,
    kind: TransactionType,
    request: DebitOrCredit | TransferRequest,
    *,
    trace_id: str | None,
) -> MovementResult:
    """Accept a movement for asynchronous processing: a ``pending`` leg and the command event
    on ``banking.transactions.submitted``, in one unit of work. The checks of the synchronous
    path run now, so a request that cannot succeed is refused at once; funds are checked when
    the command is applied."""
    require_may_move(actor, kind)
    checked = check_movement(kind, request)

    async def work(store: LedgerStore) -> Transaction:
        await check_accounts(store, actor, checked)
        leg = pending_leg(checked)
        await store.insert_legs([leg], fingerprint=checked.fingerprint, created_by=actor.user_id)
        await store.add_journal([journal_entry(leg, actor, trace_id)])
        await store.add_events([CommandSubmitted(leg, actor, trace_id)])
        return leg

    return await run_once(unit_of_work, checked, work)


async def apply_command(unit_of_work: UnitOfWork, command: Command) -> CommandOutcome:
    """Apply a submitted command exactly once: its pending leg is finished in place (completed
    or failed); a leg that is no longer pending is left alone; a command with no leg (from
    another service) runs like a synchronous request, idempotent by its reference. Business
    failures are final (a failed leg, or a rejection event). Technical failures (the database
    is down) propagate, for the caller to retry."""
    try:
        checked = replace(
            check_movement(command.kind, command.request), transaction_id=command.transaction_id
        )
    except BankingError as error:
        return await reject_command(unit_of_work, command, error)
    decide = DECISIONS[command.kind]
    already_done = False

    async def work(store: LedgerStore) -> Transaction:
        nonlocal already_done
        pending = await store.get_transaction(command.transaction_id, for_update=True)
        if pending is not None and (
            pending.status is not TransactionStatus.PENDING or pending.hold_reason is not None
        ):
            # Finished already, or held for review (only a reviewer applies it now).
            already_done = True
            return pending
        actor = await current_actor(store, command.actor)
        require_may_move(actor, command.kind)
        return await decide(store, actor, checked, pending, command.trace_id)

    try:
        result = await run_once(unit_of_work, checked, work)
    except BankingError as error:
        return await reject_command(unit_of_work, command, error)
    return CommandOutcome(command, result.transaction, already_done=already_done or result.replayed)


async def current_actor(store: LedgerStore, claimed: Actor) -> Actor:
    """Who a command acts for, as the users table says now: the user must still exist and be
    active, and their current role decides. The name and role written in the message are not
    trusted (anyone who can write to the topic could claim to be an admin)."""
    user = await store.get_owner(claimed.user_id)
    if user is None or not user.is_active:
        raise Forbidden("the user who requested this command does not exist or is not active")
    return user.as_actor()


async def reject_command(
    unit_of_work: UnitOfWork, command: Command, error: BankingError, *, reviewed: bool = False
) -> CommandOutcome:
    """Record a command that can never succeed: its pending leg fails with the error's code
    (with no leg, a rejection event says so)."""

    async def work(store: LedgerStore) -> CommandOutcome:
        pending = await store.get_transaction(command.transaction_id, for_update=True)
        if pending is None:
            await store.add_events([CommandRejected(command, error.code, error.message)])
            return CommandOutcome(command, None, rejected_code=error.code)
        if pending.status is not TransactionStatus.PENDING or (
            pending.hold_reason is not None and not reviewed
        ):
            # Finished, or held: only a reviewer's release may fail a held leg.
            return CommandOutcome(command, pending, already_done=True)
        leg = failed(pending, error.code, error.message)
        await store.finish_pending_leg(leg)
        await store.add_journal([journal_entry(leg, command.actor, command.trace_id)])
        await store.add_events([LegsRecorded((leg,), command.trace_id)])
        return CommandOutcome(command, leg, rejected_code=error.code)

    return await unit_of_work.run(work)
