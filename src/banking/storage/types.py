"""Column types that keep money exact and timestamps in UTC on both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from banking.domain.errors import InvariantViolated

_CENTS = Decimal(100)


class Money(TypeDecorator[Decimal]):
    """``NUMERIC(18,2)`` on PostgreSQL; integer minor units (hundredths) on SQLite.

    SQLite has no exact decimal type: its NUMERIC affinity turns ``900.10`` into a binary
    float. Storing hundredths as a 64-bit integer keeps sums, comparisons and the conditional
    balance updates exact there, while Python code only ever sees ``Decimal``.
    """

    impl = Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 2, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise InvariantViolated(f"money must be Decimal, got {type(value).__name__}")
        if dialect.name == "sqlite":
            hundredths = value * _CENTS
            if hundredths != hundredths.to_integral_value():
                raise InvariantViolated("money has more than two decimal places")
            return int(hundredths)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            if not isinstance(value, int):
                raise InvariantViolated(f"stored money is not an integer: {value!r}")
            return (Decimal(value) / _CENTS).quantize(Decimal("0.01"))
        return Decimal(value).quantize(Decimal("0.01"))


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps; SQLite returns naive values, which are re-tagged as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise InvariantViolated("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]
