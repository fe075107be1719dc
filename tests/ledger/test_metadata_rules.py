"""The rules of metadata and its place in the idempotency fingerprint, without any store."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from banking.domain.errors import ValidationFailed
from banking.domain.records import DebitOrCredit, TransactionType, TransferRequest
from banking.ledger.checks import check_movement
from banking.ledger.metadata import (
    METADATA_KEY_LENGTH_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_LENGTH_MAX,
    canonical_metadata,
    check_metadata,
)

DEBIT = DebitOrCredit(uuid4(), Decimal("1.00"), "USD", "coffee", "ref-1")


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"a": ""},
        {"k" * METADATA_KEY_LENGTH_MAX: "v" * METADATA_VALUE_LENGTH_MAX},
        {f"key-{n}": str(n) for n in range(METADATA_KEYS_MAX)},
        {"A.b_c-9": "naïve café 42 ✓"},
    ],
    ids=["empty", "empty-value", "longest", "most-keys", "every-key-character"],
)
def test_maps_within_the_limits_are_kept_sorted_by_key(metadata: dict[str, str]) -> None:
    checked = check_metadata(metadata)

    assert checked == metadata
    assert list(checked) == sorted(metadata)


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({f"k{n}": "v" for n in range(METADATA_KEYS_MAX + 1)}, "at most 50 keys"),
        ({"k" * (METADATA_KEY_LENGTH_MAX + 1): "v"}, "1 to 40 characters"),
        ({"": "v"}, "1 to 40 characters"),
        ({"a b": "v"}, "1 to 40 characters"),
        ({"a/b": "v"}, "1 to 40 characters"),
        ({"ключ": "v"}, "1 to 40 characters"),
        ({"a\n": "v"}, "1 to 40 characters"),
        ({"a": "v" * (METADATA_VALUE_LENGTH_MAX + 1)}, "longer than 500"),
        ({"a": "tab\t"}, "control characters"),
        ({"a": "\u200b"}, "control characters"),
        ({"a": 1}, "must be a string"),
        ({"a": None}, "must be a string"),
        ({1: "v"}, "1 to 40 characters"),
        (["a", "b"], "object of strings"),
    ],
    ids=[
        "too-many-keys",
        "long-key",
        "empty-key",
        "space",
        "slash",
        "non-ascii",
        "trailing-newline",
        "long-value",
        "tab",
        "zero-width-space",
        "number",
        "null",
        "non-string-key",
        "not-a-map",
    ],
)
def test_maps_beyond_the_limits_are_refused_naming_the_field(metadata: Any, says: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_metadata(metadata)

    assert refused.value.field == "metadata"
    assert says in refused.value.message


def test_none_is_an_empty_map_and_the_canonical_text_is_sorted_compact_json() -> None:
    assert check_metadata(None) == {}
    assert canonical_metadata({"b": "2", "a": "é"}) == '{"a":"é","b":"2"}'


def test_the_fingerprint_covers_the_metadata_in_any_key_order() -> None:
    plain = check_movement(TransactionType.DEBIT, DEBIT)
    empty = check_movement(TransactionType.DEBIT, replace(DEBIT, metadata={}))
    labelled = check_movement(
        TransactionType.DEBIT, replace(DEBIT, metadata={"order_id": "42", "channel": "web"})
    )
    reordered = check_movement(
        TransactionType.DEBIT, replace(DEBIT, metadata={"channel": "web", "order_id": "42"})
    )
    other = check_movement(TransactionType.DEBIT, replace(DEBIT, metadata={"order_id": "43"}))

    # No metadata keeps the fingerprint a key had before metadata existed.
    assert empty.fingerprint == plain.fingerprint
    assert labelled.fingerprint == reordered.fingerprint
    assert len({plain.fingerprint, labelled.fingerprint, other.fingerprint}) == 3
    assert dict(labelled.metadata) == {"channel": "web", "order_id": "42"}


def test_a_transfer_checks_its_metadata_like_a_debit() -> None:
    transfer = TransferRequest(uuid4(), uuid4(), Decimal("1.00"), "USD", metadata={"bad key": "v"})

    with pytest.raises(ValidationFailed) as refused:
        check_movement(TransactionType.TRANSFER_OUT, transfer)

    assert refused.value.field == "metadata"
