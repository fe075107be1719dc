"""REST: metadata on movements and accounts, on SQLite and PostgreSQL: stored and returned by
every read, replayed or conflicting under the same key, searchable with
``GET /api/v1/transactions?metadata[k]=v``, refused with the envelope when bad (nothing
changed), and never shown to another customer."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from banking.domain.roles import Role
from tests.conftest import Bank
from tests.rest.test_bad_input import assert_error

LABELS = {"order_id": "42", "channel": "web"}
DEBIT = "/api/v1/transactions/debit"
TRANSFER = "/api/v1/transactions/transfer"
SEARCH = "/api/v1/transactions"


async def _customer(bank: Bank, staff: dict[str, str], funded: str = "100.00") -> tuple[str, Any]:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    return await bank.account(customer_id, staff, funded=funded), customer


async def test_a_debits_metadata_is_answered_stored_and_read_back(
    bank: Bank, staff: dict[str, str]
) -> None:
    account, customer = await _customer(bank, staff)

    moved = await bank.client.post(
        DEBIT,
        json={"account_id": account, "amount": "5.00", "currency": "USD", "metadata": LABELS},
        headers=customer,
    )

    assert moved.status_code == 200, moved.text
    assert moved.json()["metadata"] == LABELS
    leg_id = moved.json()["transaction_id"]
    read = await bank.client.get(f"/api/v1/transactions/{leg_id}", headers=customer)
    assert read.json()["metadata"] == LABELS
    history = await bank.client.get(f"/api/v1/accounts/{account}/transactions", headers=customer)
    by_id = {leg["transaction_id"]: leg for leg in history.json()["transactions"]}
    assert by_id[leg_id]["metadata"] == LABELS
    for accept, read_table in [
        ("application/vnd.apache.arrow.stream", lambda data: pa.ipc.open_stream(data).read_all()),
        ("application/vnd.apache.parquet", lambda data: pq.read_table(io.BytesIO(data))),
    ]:
        exported = await bank.client.get(
            f"/api/v1/accounts/{account}/transactions", headers={**customer, "accept": accept}
        )
        assert exported.status_code == 200, exported.text
        rows = {row["transaction_id"]: row for row in read_table(exported.content).to_pylist()}
        assert dict(rows[leg_id]["metadata"]) == LABELS, accept


async def test_both_legs_of_a_transfer_carry_its_metadata(
    bank: Bank, staff: dict[str, str]
) -> None:
    source, alice = await _customer(bank, staff)
    destination, bob = await _customer(bank, staff, funded="1.00")

    moved = await bank.client.post(
        TRANSFER,
        json={
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": "5.00",
            "currency": "USD",
            "metadata": {"invoice": "inv-7"},
        },
        headers=alice,
    )

    assert moved.status_code == 200, moved.text
    incoming = moved.json()["related_transaction_id"]
    read = await bank.client.get(f"/api/v1/transactions/{incoming}", headers=bob)
    assert read.json()["metadata"] == {"invoice": "inv-7"}
    found = await bank.client.get(SEARCH, params={"metadata[invoice]": "inv-7"}, headers=bob)
    assert [leg["transaction_id"] for leg in found.json()["transactions"]] == [incoming]


async def test_the_lookup_by_metadata_shows_only_the_callers_matching_legs(
    bank: Bank, staff: dict[str, str]
) -> None:
    alice_account, alice = await _customer(bank, staff)
    bob_account, bob = await _customer(bank, staff)
    ids: dict[str, str] = {}
    for name, account, headers, labels in [
        ("a42", alice_account, alice, {"order_id": "42", "shop": "a"}),
        ("a42b", alice_account, alice, {"order_id": "42", "shop": "b"}),
        ("a43", alice_account, alice, {"order_id": "43"}),
        ("b42", bob_account, bob, {"order_id": "42"}),
    ]:
        moved = await bank.client.post(
            DEBIT,
            json={"account_id": account, "amount": "1.00", "currency": "USD", "metadata": labels},
            headers=headers,
        )
        assert moved.status_code == 200, moved.text
        ids[name] = moved.json()["transaction_id"]

    async def found(params: Any, headers: dict[str, str]) -> set[str]:
        response = await bank.client.get(SEARCH, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return {leg["transaction_id"] for leg in response.json()["transactions"]}

    assert await found({"metadata[order_id]": "42"}, alice) == {ids["a42"], ids["a42b"]}
    assert await found({"metadata[order_id]": "42"}, bob) == {ids["b42"]}
    assert await found({"metadata[order_id]": "42"}, staff) == {ids["a42"], ids["a42b"], ids["b42"]}
    assert await found([("metadata[order_id]", "42"), ("metadata[shop]", "b")], alice) == {
        ids["a42b"]
    }
    assert await found({"metadata[order_id]": "42", "account_id": bob_account}, staff) == {
        ids["b42"]
    }
    assert await found({"metadata[order_id]": "44"}, staff) == set()


@pytest.mark.parametrize(
    "params",
    [
        {"metadata[bad key]": "1"},
        {"metadata[]": "1"},
        {f"metadata[{'k' * 41}]": "1"},
        {"metadata[order_id]": "v" * 501},
        [("metadata[order_id]", "1"), ("metadata[order_id]", "2")],
        {"metadata": "order_id"},
        {"metadata[order_id": "1"},
    ],
    ids=["space", "empty", "long-key", "long-value", "twice", "no-key", "unclosed"],
)
async def test_a_lookup_by_bad_metadata_answers_the_envelope(
    bank: Bank, staff: dict[str, str], params: Any
) -> None:
    _, customer = await _customer(bank, staff)

    response = await bank.client.get(SEARCH, params=params, headers=customer)

    assert_error(response, 422, "VALIDATION_ERROR", "metadata")


async def test_a_replay_with_the_same_metadata_replays_and_other_metadata_conflicts(
    bank: Bank, staff: dict[str, str]
) -> None:
    account, customer = await _customer(bank, staff)
    body = {
        "account_id": account,
        "amount": "5.00",
        "currency": "USD",
        "reference_id": "order-42",
        "metadata": {"order_id": "42", "channel": "web"},
    }
    first = await bank.client.post(DEBIT, json=body, headers=customer)
    before = await bank.snapshot()

    again = await bank.client.post(
        DEBIT, json={**body, "metadata": {"channel": "web", "order_id": "42"}}, headers=customer
    )
    conflict = await bank.client.post(
        DEBIT, json={**body, "metadata": {"order_id": "43", "channel": "web"}}, headers=customer
    )

    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    error = assert_error(conflict, 409, "IDEMPOTENCY_CONFLICT")
    assert "metadata" in error["message"]
    assert await bank.snapshot() == before


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{n}": "v" for n in range(51)},
        {"k" * 41: "v"},
        {"bad key": "v"},
        {"order_id": "v" * 501},
        {"order_id": "tab\there"},
    ],
    ids=["too-many-keys", "long-key", "space-in-key", "long-value", "control-character"],
)
async def test_bad_metadata_answers_the_envelope_and_changes_nothing(
    bank: Bank, staff: dict[str, str], metadata: dict[str, str]
) -> None:
    account, customer = await _customer(bank, staff)
    destination, _ = await _customer(bank, staff)
    customer_id, _ = await bank.user(Role.CUSTOMER)
    before = await bank.snapshot()

    for path, body, headers in [
        (DEBIT, {"account_id": account, "amount": "1.00", "currency": "USD"}, customer),
        (
            TRANSFER,
            {
                "source_account_id": account,
                "destination_account_id": destination,
                "amount": "1.00",
                "currency": "USD",
            },
            customer,
        ),
        (
            "/api/v1/accounts",
            {"account_type": "checking", "currency": "USD", "customer_id": str(customer_id)},
            staff,
        ),
    ]:
        response = await bank.client.post(
            path, json={**body, "metadata": metadata}, headers=headers
        )
        assert_error(response, 422, "VALIDATION_ERROR", "metadata")
    submitted = await bank.client.post(
        DEBIT,
        json={"account_id": account, "amount": "1.00", "currency": "USD", "metadata": metadata},
        headers={**customer, "Prefer": "respond-async"},
    )
    assert_error(submitted, 422, "VALIDATION_ERROR", "metadata")
    batch = await bank.client.post(
        "/api/v1/transactions/batch",
        json={
            "items": [
                {
                    "type": "debit",
                    "account_id": account,
                    "amount": "1.00",
                    "currency": "USD",
                    "metadata": metadata,
                }
            ]
        },
        headers=customer,
    )
    assert_error(batch, 422, "VALIDATION_ERROR")

    assert await bank.snapshot() == before


async def test_an_asynchronous_movement_and_a_batch_item_keep_their_metadata(
    bank: Bank, staff: dict[str, str]
) -> None:
    account, customer = await _customer(bank, staff)

    accepted = await bank.client.post(
        DEBIT,
        json={"account_id": account, "amount": "1.00", "currency": "USD", "metadata": LABELS},
        headers={**customer, "Prefer": "respond-async"},
    )
    batch = await bank.client.post(
        "/api/v1/transactions/batch",
        json={
            "items": [
                {
                    "type": "debit",
                    "account_id": account,
                    "amount": "1.00",
                    "currency": "USD",
                    "metadata": {"line": "1"},
                }
            ]
        },
        headers=customer,
    )

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["metadata"] == LABELS
    assert batch.status_code == 200, batch.text
    (item,) = batch.json()["items"]
    assert item["transaction"]["metadata"] == {"line": "1"}


async def test_an_accounts_metadata_is_answered_read_back_and_part_of_its_key(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    body = {
        "account_type": "savings",
        "currency": "USD",
        "customer_id": str(customer_id),
        "metadata": {"segment": "retail"},
    }
    key = {**staff, "Idempotency-Key": "open-savings-1"}

    opened = await bank.client.post("/api/v1/accounts", json=body, headers=key)
    again = await bank.client.post("/api/v1/accounts", json=body, headers=key)
    before = await bank.snapshot()
    conflict = await bank.client.post(
        "/api/v1/accounts", json={**body, "metadata": {"segment": "vip"}}, headers=key
    )

    assert opened.status_code == 201, opened.text
    assert opened.json()["metadata"] == {"segment": "retail"}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["account_id"] == opened.json()["account_id"]
    read = await bank.client.get(
        f"/api/v1/accounts/{opened.json()['account_id']}", headers=customer
    )
    assert read.json()["metadata"] == {"segment": "retail"}
    error = assert_error(conflict, 409, "IDEMPOTENCY_CONFLICT")
    assert "metadata" in error["message"]
    assert await bank.snapshot() == before


async def test_another_customers_metadata_is_not_found(bank: Bank, staff: dict[str, str]) -> None:
    bob_account, bob = await _customer(bank, staff)
    _, alice = await _customer(bank, staff)
    moved = await bank.client.post(
        DEBIT,
        json={
            "account_id": bob_account,
            "amount": "1.00",
            "currency": "USD",
            "metadata": {"secret": "s"},
        },
        headers=bob,
    )
    leg_id = moved.json()["transaction_id"]

    read = await bank.client.get(f"/api/v1/transactions/{leg_id}", headers=alice)
    searched = await bank.client.get(SEARCH, params={"metadata[secret]": "s"}, headers=alice)
    account = await bank.client.get(f"/api/v1/accounts/{bob_account}", headers=alice)

    assert_error(read, 404, "TRANSACTION_NOT_FOUND")
    assert searched.status_code == 200 and searched.json()["transactions"] == []
    assert_error(account, 404, "ACCOUNT_NOT_FOUND")
