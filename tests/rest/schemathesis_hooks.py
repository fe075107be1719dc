"""schemathesis hooks for tests/rest/test_schemathesis.py (``hooks`` in its config).

``positive_data_acceptance`` refuses any 422 to a request the document says is valid. A few
rules cannot be written in JSON Schema because they relate two fields, the caller's role or
the state of the books: for those operations the run allows 422 (schemathesis's own advice
for such rules, ``st explain ST202``), and the stricter check below makes sure that such a
422 is one of those rules, named by its code, field and message, and nothing else.

It also gives schemathesis the document's one custom string format.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st

from banking.rest.schemas import PRINTABLE_FORMAT

# The document's `printable` format (banking.rest.schemas): what str.isprintable accepts.
schemathesis.openapi.format(
    PRINTABLE_FORMAT,
    st.text(
        st.characters(
            exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
            include_characters=" ",
        )
    ),
)

# (code, field or None, a fragment of the message)
Rule = tuple[str, str | None, str]
_MOVEMENT: list[Rule] = [
    ("VALIDATION_ERROR", "reference_id", "Idempotency-Key header and reference_id differ"),
    # JPY, ISK, KRW and VND have no minor digits: "1.50" is valid text but not for them.
    ("VALIDATION_ERROR", "amount", "decimal places for"),
    # The account's currency and funds are the state of the books.
    ("CURRENCY_MISMATCH", None, "account holds"),
    ("INSUFFICIENT_FUNDS", None, ""),
    # No balance may reach 10^16: a credit (or the receiving side of a transfer) is refused
    # when the account already holds enough that the amount would take it there.
    ("VALIDATION_ERROR", "amount", "the resulting balance would exceed the ledger's limit"),
]
RULES_THE_SCHEMA_CANNOT_EXPRESS: dict[str, list[Rule]] = {
    "POST /api/v1/transactions/debit": _MOVEMENT,
    "POST /api/v1/transactions/credit": _MOVEMENT,
    "POST /api/v1/transactions/transfer": [
        *_MOVEMENT,
        ("VALIDATION_ERROR", "destination_account_id", "must be different"),
    ],
    # An atomic batch that fails answers its failing item's error (the item's field, and its
    # index in details); a batch without `atomic` answers such items in its 200.
    "POST /api/v1/transactions/batch": [
        *_MOVEMENT,
        ("VALIDATION_ERROR", "destination_account_id", "must be different"),
    ],
    # A reversal takes at most what is left of the movement (the state of the books), in the
    # movement's currency's digits, and is decided like any movement.
    "POST /api/v1/transactions/{transaction_id}/reverse": [
        *_MOVEMENT,
        ("VALIDATION_ERROR", "amount", "what is left to reverse"),
        ("VALIDATION_ERROR", "amount", "nothing is left to reverse"),
    ],
    # Staff must name an active customer; a customer may name only themselves.
    "POST /api/v1/accounts": [
        ("VALIDATION_ERROR", "customer_id", "customer_id is required"),
        ("VALIDATION_ERROR", "customer_id", "customer_id must be an active customer"),
        ("VALIDATION_ERROR", "customer_id", "customers open accounts for themselves only"),
    ],
    # The last digit of an account number is a Luhn check digit.
    # ... and the account list's cursor is opaque, its page_size at most PAGE_SIZE_MAX.
    "GET /api/v1/accounts": [
        ("VALIDATION_ERROR", "account_number", "is not valid"),
        ("VALIDATION_ERROR", "cursor", "cursor is not valid"),
        ("VALIDATION_ERROR", "page_size", "page_size must be between"),
    ],
    # A cursor is opaque; a date-time with a zone may fall outside years 1-9999 in UTC.
    "GET /api/v1/accounts/{account_id}/transactions": [
        ("VALIDATION_ERROR", "cursor", "cursor is not valid"),
        ("VALIDATION_ERROR", "from", "is out of range"),
        ("VALIDATION_ERROR", "to", "is out of range"),
    ],
    # The review queue's and the lookup's cursors are opaque too; the lookup's times as the
    # history's, and from must not be after to.
    "GET /api/v1/transactions": [
        ("VALIDATION_ERROR", "cursor", "cursor is not valid"),
        ("VALIDATION_ERROR", "page_size", "page_size must be between"),
        ("VALIDATION_ERROR", "from", "is out of range"),
        ("VALIDATION_ERROR", "to", "is out of range"),
        ("VALIDATION_ERROR", "from", "from must not be after to"),
    ],
    "GET /api/v1/accounts/{account_id}/balance": [("VALIDATION_ERROR", "as_of", "is out of range")],
    # A statement's period: from not after to, within years 1-9999 UTC, at most
    # STATEMENT_LEGS_MAX legs.
    "GET /api/v1/accounts/{account_id}/statement": [
        ("VALIDATION_ERROR", "from", "is out of range"),
        ("VALIDATION_ERROR", "to", "is out of range"),
        ("VALIDATION_ERROR", "from", "from must not be after to"),
        ("VALIDATION_ERROR", "from", "legs (STATEMENT_LEGS_MAX)"),
    ],
    # The audit trail's cursor is opaque; from must be before to; times within years 1-9999 UTC.
    "GET /api/v1/audit": [
        ("VALIDATION_ERROR", "cursor", "cursor is not valid"),
        ("VALIDATION_ERROR", "from", "is out of range"),
        ("VALIDATION_ERROR", "to", "is out of range"),
        ("VALIDATION_ERROR", "from", "from must be before to"),
    ],
    # A webhook's URL must resolve to an address it may reach (SSRF); a user has a bounded
    # number of webhooks.
    "POST /api/v1/webhooks": [
        ("VALIDATION_ERROR", "url", ""),
        ("VALIDATION_ERROR", None, "a user may have at most"),
    ],
    "GET /api/v1/webhooks/{webhook_id}/deliveries": [
        ("VALIDATION_ERROR", "cursor", "cursor is not valid")
    ],
    # A hold is a movement's request with an expiry in the future, at most
    # HOLD_DURATION_MAX_HOURS ahead (relative to now); a capture takes at most what is left.
    "POST /api/v1/holds": [
        *_MOVEMENT,
        ("VALIDATION_ERROR", "destination_account_id", "must be another account"),
        ("VALIDATION_ERROR", "expires_at", "must be in the future"),
        ("VALIDATION_ERROR", "expires_at", "hours from now"),
        ("VALIDATION_ERROR", "expires_at", "is out of range"),
    ],
    "POST /api/v1/holds/{hold_id}/capture": [
        ("VALIDATION_ERROR", "reference_id", "Idempotency-Key header and reference_id differ"),
        ("VALIDATION_ERROR", "amount", "decimal places for"),
        ("HOLD_AMOUNT_EXCEEDED", None, "exceeds"),
    ],
    "GET /api/v1/holds": [
        ("VALIDATION_ERROR", "cursor", "cursor is not valid"),
        ("VALIDATION_ERROR", "page_size", "page_size must be between"),
    ],
    # An admin cannot deactivate or demote themselves.
    "PATCH /api/v1/users/{user_id}": [
        ("VALIDATION_ERROR", "is_active", "cannot deactivate or demote their own"),
        ("VALIDATION_ERROR", "role", "cannot deactivate or demote their own"),
    ],
}


def _matches(rule: Rule, error: dict[str, Any]) -> bool:
    code, field, fragment = rule
    fields = {detail.get("field") for detail in error.get("details") or [{"field": None}]}
    return error["code"] == code and fields == {field} and fragment in error["message"]


@schemathesis.check
def declined_only_by_rules_the_schema_cannot_express(
    ctx: Any, response: Any, case: Any
) -> bool | None:
    """A request valid by the document that is answered 422 was refused by one of
    ``RULES_THE_SCHEMA_CANNOT_EXPRESS`` (else the document or the server is wrong)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    error = response.json()["error"]
    rules = RULES_THE_SCHEMA_CANNOT_EXPRESS.get(case.operation.label, [])
    if not any(_matches(rule, error) for rule in rules):
        raise AssertionError(
            f"a request valid by the document was refused with {error['code']} "
            f"({error['message']}): document the rule, or fix the server"
        )
    return None
