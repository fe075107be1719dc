"""REST: the lookup across accounts, the balance at a point in time and statements, on SQLite
and PostgreSQL: the happy paths, who sees what, bad input (the envelope, nothing changed) and
every statement format's figures equal to the JSON's to the cent."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from banking.domain.roles import Role
from tests.conftest import Bank, make_settings, running_bank
from tests.rest.test_bad_input import assert_error

FAR_PAST = "2000-01-01T00:00:00Z"
FAR_FUTURE = "2999-01-01T00:00:00Z"


@dataclass
class Books:
    alice: dict[str, str]
    bob: dict[str, str]
    staff: dict[str, str]
    usd: str  # Alice's: funded 100.00, then -30.00 (order-42), +12.34, -5.00 to Bob
    usd_bob: str  # Bob's: funded 10.00, then +5.00 from Alice; and -1.00 (order-42)


async def _post(bank: Bank, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    response = await bank.client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def make_books(bank: Bank, staff: dict[str, str]) -> Books:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, bob = await bank.user(Role.CUSTOMER)
    usd = await bank.account(alice_id, staff, funded="100.00")
    usd_bob = await bank.account(bob_id, staff, funded="10.00")
    money = {"currency": "USD"}
    await _post(
        bank,
        "/api/v1/transactions/debit",
        {"account_id": usd, "amount": "30.00", "reference_id": "order-42", **money},
        alice,
    )
    await _post(
        bank, "/api/v1/transactions/credit", {"account_id": usd, "amount": "12.34", **money}, staff
    )
    await _post(
        bank,
        "/api/v1/transactions/transfer",
        {
            "source_account_id": usd,
            "destination_account_id": usd_bob,
            "amount": "5.00",
            "reference_id": "rent",
            **money,
        },
        alice,
    )
    await _post(
        bank,
        "/api/v1/transactions/debit",
        {"account_id": usd_bob, "amount": "1.00", "reference_id": "order-42", **money},
        bob,
    )
    return Books(alice, bob, staff, usd, usd_bob)


@pytest.fixture
async def books(bank: Bank, staff: dict[str, str]) -> Books:
    return await make_books(bank, staff)


async def _get(bank: Bank, path: str, headers: dict[str, str], **params: str) -> Any:
    response = await bank.client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_did_my_payment_go_through(bank: Bank, books: Books) -> None:
    alice = await _get(bank, "/api/v1/transactions", books.alice, reference_id="order-42")
    bob = await _get(bank, "/api/v1/transactions", books.bob, reference_id="order-42")
    staff = await _get(bank, "/api/v1/transactions", books.staff, reference_id="order-42")

    assert [(leg["account_id"], leg["amount"], leg["status"]) for leg in alice["transactions"]] == [
        (books.usd, "30.00", "completed")
    ]
    assert [leg["account_id"] for leg in bob["transactions"]] == [books.usd_bob]
    assert {leg["account_id"] for leg in staff["transactions"]} == {books.usd, books.usd_bob}
    assert alice["next_cursor"] is None


async def test_the_lookup_filters_and_pages(bank: Bank, books: Books) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"account_id": books.usd, "page_size": "1"} | (
            {"cursor": cursor} if cursor else {}
        )
        page = await _get(bank, "/api/v1/transactions", books.alice, **params)
        seen.extend(leg["transaction_id"] for leg in page["transactions"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    credits = await _get(bank, "/api/v1/transactions", books.alice, type="credit")
    transfers = await _get(
        bank, "/api/v1/transactions", books.bob, reference_id="rent", status="completed"
    )
    none_yet = await _get(bank, "/api/v1/transactions", books.alice, to=FAR_PAST)

    assert len(seen) == len(set(seen)) == 4
    assert [leg["amount"] for leg in credits["transactions"]] == ["12.34", "100.00"]
    assert [leg["transaction_type"] for leg in transfers["transactions"]] == ["transfer_in"]
    assert none_yet["transactions"] == []


async def test_the_review_queue_still_answers_status_held(bank: Bank, books: Books) -> None:
    queue = await _get(bank, "/api/v1/transactions", books.staff, status="held")
    assert queue == {"transactions": [], "next_cursor": None}


async def test_balance_as_of_a_time_is_the_balance_then(bank: Bank, books: Books) -> None:
    history = await _get(bank, f"/api/v1/accounts/{books.usd}/transactions", books.alice)
    legs = sorted(history["transactions"], key=lambda leg: leg["created_at"])
    path = f"/api/v1/accounts/{books.usd}/balance"

    expected = ["100.00", "70.00", "82.34", "77.34"]
    for leg, balance in zip(legs, expected, strict=True):
        then = await bank.client.get(path, params={"as_of": leg["created_at"]}, headers=books.alice)
        assert then.status_code == 200, then.text
        assert then.json()["current_balance"] == then.json()["available_balance"] == balance
        assert then.headers["ETag"] == f'"{then.json()["version"]}"'
    before = await _get(bank, path, books.alice, as_of=FAR_PAST)
    now = await _get(bank, path, books.alice)
    future = await _get(bank, path, books.alice, as_of=FAR_FUTURE)

    assert before["current_balance"] == "0.00"
    assert future["current_balance"] == now["current_balance"] == "77.34"
    assert future["version"] == now["version"]


async def test_a_statement_in_json(bank: Bank, books: Books) -> None:
    statement = await _get(
        bank,
        f"/api/v1/accounts/{books.usd}/statement",
        books.alice,
        **{"from": FAR_PAST, "to": FAR_FUTURE},
    )

    assert statement["opening_balance"] == "0.00"
    assert [leg["running_balance"] for leg in statement["transactions"]] == [
        "100.00",
        "70.00",
        "82.34",
        "77.34",
    ]
    assert statement["closing_balance"] == "77.34"
    assert statement["credits_total"] == "112.34"
    assert statement["debits_total"] == "35.00"
    assert statement["count"] == 4
    assert statement["currency"] == "USD"


async def _statement(bank: Bank, books: Books, how: dict[str, str]) -> Any:
    accept = how.pop("accept", None)
    headers = books.alice | ({"Accept": accept} if accept else {})
    response = await bank.client.get(
        f"/api/v1/accounts/{books.usd}/statement",
        params={"from": FAR_PAST, "to": FAR_FUTURE, **how},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response


def _figures_of_table(table: pa.Table) -> tuple[list[str], dict[str, str]]:
    running = [str(value) for value in table.column("running_balance").to_pylist()]
    assert table.schema.field("running_balance").type == pa.decimal128(18, 2)
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    metadata = {key.decode(): value.decode() for key, value in table.schema.metadata.items()}
    return running, metadata


@pytest.mark.parametrize(
    "how",
    [
        {"format": "csv"},
        {"accept": "text/csv"},
        {"format": "arrow"},
        {"accept": "application/vnd.apache.arrow.stream"},
        {"format": "parquet"},
        {"accept": "application/vnd.apache.parquet"},
    ],
)
async def test_every_format_has_the_jsons_figures_to_the_cent(
    bank: Bank, books: Books, how: dict[str, str]
) -> None:
    as_json = (await _statement(bank, books, {})).json()
    response = await _statement(bank, books, dict(how))
    kind = how.get("format") or how["accept"].rsplit(".", 1)[-1].rsplit("/", 1)[-1]

    if kind == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        running = [row["running_balance"] for row in rows]
        amounts = [row["amount"] for row in rows]
        summary: dict[str, str] = {}
    else:
        if kind in ("arrow", "stream"):
            table = pa.ipc.open_stream(response.content).read_all()
        else:
            table = pq.read_table(io.BytesIO(response.content))
        running, summary = _figures_of_table(table)
        amounts = [str(value) for value in table.column("amount").to_pylist()]
    assert running == [leg["running_balance"] for leg in as_json["transactions"]]
    assert amounts == [leg["amount"] for leg in as_json["transactions"]]
    for name in ("opening_balance", "closing_balance", "credits_total", "debits_total"):
        header = f"x-statement-{name.replace('_', '-')}"
        assert response.headers[header] == as_json[name]
        if summary:
            assert summary[name] == as_json[name]
    assert response.headers["x-statement-count"] == str(as_json["count"])
    assert sum(Decimal(amount) for amount in amounts) == Decimal("147.34")


async def test_another_customers_books_are_not_found(bank: Bank, books: Books) -> None:
    before = await bank.snapshot()
    statement = await bank.client.get(
        f"/api/v1/accounts/{books.usd}/statement",
        params={"from": FAR_PAST, "to": FAR_FUTURE},
        headers=books.bob,
    )
    balance = await bank.client.get(
        f"/api/v1/accounts/{books.usd}/balance", params={"as_of": FAR_FUTURE}, headers=books.bob
    )
    lookup = await bank.client.get(
        "/api/v1/transactions", params={"account_id": books.usd}, headers=books.bob
    )
    theirs = await _get(bank, "/api/v1/transactions", books.bob, reference_id="order-42")

    assert_error(statement, 404, "ACCOUNT_NOT_FOUND")
    assert_error(balance, 404, "ACCOUNT_NOT_FOUND")
    assert_error(lookup, 404, "ACCOUNT_NOT_FOUND")
    assert books.usd not in {leg["account_id"] for leg in theirs["transactions"]}
    assert await bank.snapshot() == before


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/transactions", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ("/api/v1/transactions", {"page_size": "0"}, None),
        ("/api/v1/transactions", {"page_size": "100000"}, "page_size"),
        ("/api/v1/transactions", {"from": "2026-02-01T00:00:00Z", "to": FAR_PAST}, "from"),
        ("/api/v1/transactions", {"from": "2026-01-01T00:00:00"}, None),
        ("/api/v1/transactions", {"status": "lost"}, None),
        ("/statement", {"from": FAR_FUTURE, "to": FAR_PAST}, "from"),
        ("/statement", {"from": "2026-01-01T00:00:00", "to": FAR_FUTURE}, None),
        ("/statement", {"to": FAR_FUTURE}, None),
        ("/statement", {"from": FAR_PAST, "to": FAR_FUTURE, "format": "pdf"}, None),
        ("/balance", {"as_of": "2026-01-01T00:00:00"}, None),
        ("/balance", {"as_of": "yesterday"}, None),
    ],
)
async def test_bad_input_answers_the_envelope_and_changes_nothing(
    bank: Bank, books: Books, path: str, params: dict[str, str], field: str | None
) -> None:
    if not path.startswith("/api"):
        path = f"/api/v1/accounts/{books.usd}{path}"
    before = await bank.snapshot()
    response = await bank.client.get(path, params=params, headers=books.alice)
    assert_error(response, 422, "VALIDATION_ERROR", field)
    assert await bank.snapshot() == before


async def test_too_many_legs_for_one_statement_is_refused(database_url: str) -> None:
    async with running_bank(make_settings(database_url, statement_legs_max=3)) as bank:
        _, staff = await bank.user(Role.TELLER)
        books = await make_books(bank, staff)
        before = await bank.snapshot()
        response = await bank.client.get(
            f"/api/v1/accounts/{books.usd}/statement",
            params={"from": FAR_PAST, "to": FAR_FUTURE},
            headers=books.alice,
        )
        error = assert_error(response, 422, "VALIDATION_ERROR", "from")
        assert "more than 3 legs" in error["message"]
        assert await bank.snapshot() == before
