"""`banking analytics reconcile`: the dataset against the ledger, per currency and day.

For each (currency, day of the leg's time in UTC): completed credits and transfers in minus
completed debits and transfers out, summed once from the ``transactions`` view of the dataset
(``transaction.completed`` events) and once from the ledger's ``transactions`` table. Any
difference, a day or currency only one side has, or a leg stored twice in the dataset, is a
problem named in the report. Sums are exact (``DECIMAL`` in DuckDB, ``Decimal`` in Python).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date
from decimal import Decimal
from typing import Final

from sqlalchemy import select

from banking.analytics import query
from banking.domain.records import TransactionStatus, TransactionType
from banking.storage.database import Database
from banking.storage.tables import transactions

_ZERO: Final = Decimal("0.00")
_SIGN: Final = {
    TransactionType.CREDIT.value: 1,
    TransactionType.TRANSFER_IN.value: 1,
    TransactionType.DEBIT.value: -1,
    TransactionType.TRANSFER_OUT.value: -1,
}
DatedCurrency = tuple[str, date]
# Net completed movement and the number of completed legs behind it.
Totals = tuple[Decimal, int]

DATASET_NET_SQL: Final = """
SELECT currency, CAST("timestamp" AS DATE) AS day,
       SUM(CASE WHEN transaction_type IN ('credit', 'transfer_in') THEN amount
                ELSE -amount END) AS net,
       COUNT(*) AS legs
FROM transactions
WHERE event_type = 'transaction.completed'
GROUP BY ALL
"""
DUPLICATES_SQL: Final = """
SELECT transaction_id, COUNT(*) AS copies FROM transactions
WHERE event_type = 'transaction.completed'
GROUP BY transaction_id HAVING COUNT(*) > 1 ORDER BY transaction_id LIMIT 20
"""


@dataclass
class AnalyticsReconciliation:
    dataset: dict[DatedCurrency, Totals] = field(default_factory=dict)
    ledger: dict[DatedCurrency, Totals] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def dataset_net(location: str) -> tuple[dict[DatedCurrency, Totals], list[str]]:
    """Net completed movement per (currency, day) in the dataset, and legs stored twice."""
    connection = query.connect(location)
    try:
        net = {
            (currency, day): (Decimal(total), int(legs))
            for currency, day, total, legs in connection.execute(DATASET_NET_SQL).fetchall()
        }
        duplicates = [
            f"dataset: leg {transaction_id} stored {copies} times"
            for transaction_id, copies in connection.execute(DUPLICATES_SQL).fetchall()
        ]
    finally:
        connection.close()
    return net, duplicates


async def ledger_net(database: Database) -> dict[DatedCurrency, Totals]:
    """The same sums from the ledger's completed legs."""
    totals: dict[DatedCurrency, Decimal] = defaultdict(lambda: _ZERO)
    legs: dict[DatedCurrency, int] = defaultdict(int)
    statement = select(
        transactions.c.currency,
        transactions.c.created_at,
        transactions.c.transaction_type,
        transactions.c.amount,
    ).where(transactions.c.status == TransactionStatus.COMPLETED.value)
    async with database.read() as connection:
        result = await connection.stream(statement.execution_options(yield_per=5000))
        async for currency, created_at, kind, amount in result:
            day = created_at.astimezone(UTC).date()
            totals[(currency, day)] += _SIGN[kind] * amount
            legs[(currency, day)] += 1
    return {key: (total, legs[key]) for key, total in totals.items()}


async def reconcile_dataset(location: str, database: Database) -> AnalyticsReconciliation:
    """The dataset's net movement per currency and day against the ledger's."""
    dataset, duplicates = dataset_net(location)
    ledger = await ledger_net(database)
    report = AnalyticsReconciliation(dataset=dataset, ledger=ledger, problems=duplicates)
    for currency, day in sorted(set(dataset) | set(ledger)):
        in_dataset = dataset.get((currency, day))
        in_ledger = ledger.get((currency, day))
        if in_dataset != in_ledger:
            report.problems.append(
                f"{currency} {day.isoformat()}: dataset {_text(in_dataset)} != ledger "
                f"{_text(in_ledger)}"
            )
    return report


def _text(totals: Totals | None) -> str:
    if totals is None:
        return "missing"
    net, legs = totals
    return f"{format(net, 'f')} ({legs} legs)"
