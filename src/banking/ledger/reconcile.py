"""Check that the books balance (DESIGN.md invariant 3) and report every difference."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from banking.domain.records import TransactionType
from banking.ledger.ports import UnitOfWork

REPORTED_ROWS_MAX = 100
_ZERO = Decimal("0.00")


@dataclass
class ReconcileReport:
    currencies: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


async def reconcile(unit_of_work: UnitOfWork) -> ReconcileReport:
    """Per currency, balances equal completed credits minus debits and transfers net to zero;
    per account, the balance equals the signed sum of its completed legs; no balance below
    minus its overdraft limit; per account, available equals current minus its open holds
    (and per hold, its captured amount is the sum of its capture legs);
    every completed transfer leg has a completed partner of the same amount."""
    report = ReconcileReport()
    async with unit_of_work.read() as store:
        balance_totals = await store.balance_totals_by_currency()
        leg_totals = await store.completed_totals()
        mismatched_accounts = await store.account_mismatches(REPORTED_ROWS_MAX)
        unmatched_legs = await store.unmatched_transfer_legs(REPORTED_ROWS_MAX)
        held_totals = await store.open_hold_totals()
        mismatched_holds = await store.hold_capture_mismatches(REPORTED_ROWS_MAX)

    currencies = sorted(
        set(balance_totals) | {currency for currency, _ in leg_totals} | set(held_totals)
    )
    for currency in currencies:

        def total(kind: TransactionType, currency: str = currency) -> Decimal:
            return leg_totals.get((currency, kind.value), _ZERO)

        credits, debits = total(TransactionType.CREDIT), total(TransactionType.DEBIT)
        sent, received = total(TransactionType.TRANSFER_OUT), total(TransactionType.TRANSFER_IN)
        balances = balance_totals.get(currency, _ZERO)
        report.currencies[currency] = {
            "balances": str(balances),
            "credits": str(credits),
            "debits": str(debits),
            "transfers_out": str(sent),
            "transfers_in": str(received),
            # What open holds take from available balances (available = current - this).
            "open_holds": str(held_totals.get(currency, _ZERO)),
        }
        if balances != credits - debits:
            report.problems.append(
                f"{currency}: balances {balances} != credits {credits} - debits {debits}"
            )
        if sent != received:
            report.problems.append(f"{currency}: transfers out {sent} != transfers in {received}")
    for row in mismatched_accounts:
        below = min(row.current_balance, row.available_balance) < -row.overdraft_limit
        report.problems.append(
            f"account {row.account_id}: current {row.current_balance}, available "
            f"{row.available_balance}, sum of completed legs {row.legs_total or _ZERO}"
            + (f", open holds {row.open_holds}" if row.open_holds else "")
            + (f", below its overdraft limit {row.overdraft_limit}" if below else "")
        )
    for transaction_id in unmatched_legs:
        report.problems.append(f"transfer leg {transaction_id} has no matching partner leg")
    for hold_id in mismatched_holds:
        report.problems.append(f"hold {hold_id}: captured amount != the sum of its captures")
    return report
