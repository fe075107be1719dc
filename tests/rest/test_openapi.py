"""The OpenAPI document says what the server does: every error is the envelope with its codes
as an enum, 429 and 503 wherever they can happen, the headers, examples that are valid, readable
operation ids, links; and the HTTP details it describes (Allow, 405, RFC 3339 times) hold.

tests/rest/test_schemathesis.py checks the same document against the running server with
generated requests; these tests pin what a reader of the document relies on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import pytest

from banking.domain import errors as domain_errors
from banking.domain.roles import Role
from banking.observability.metrics import ERROR_CODES
from banking.rest.errors import HTTP_STATUS_BY_CODE, ErrorCode
from tests.conftest import Bank
from tests.rest.test_bad_input import assert_error

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
# The responses whose body is not the error envelope.
NOT_THE_ENVELOPE = {("/ready", "get", "503")}


@dataclass
class Accounts:
    customer: dict[str, str]
    staff: dict[str, str]
    usd: str


@pytest.fixture
async def accounts(bank: Bank, staff: dict[str, str]) -> Accounts:
    """A customer's USD account with one credit of 100.00."""
    customer_id, customer = await bank.user(Role.CUSTOMER)
    return Accounts(customer, staff, await bank.account(customer_id, staff, funded="100.00"))


@pytest.fixture
async def spec(bank: Bank) -> dict[str, Any]:
    response = await bank.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        section, name = schema["$ref"].split("/")[-2:]
        schema = spec["components"][section][name]
    return schema


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema validator of ``schema`` with the document's components for its refs."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": spec["components"]})


def codes_of(status: int) -> list[str]:
    return [code.value for code in ErrorCode if HTTP_STATUS_BY_CODE[code] == status]


# --- errors ------------------------------------------------------------------------------


async def test_every_error_response_is_the_envelope_with_its_codes_as_an_enum(
    spec: dict[str, Any],
) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    assert resolve(spec, schemas["ErrorBody"]["properties"]["code"])["enum"] == [
        code.value for code in ErrorCode
    ]
    checked = 0
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, method, status) in NOT_THE_ENVELOPE:
                continue
            media = response["content"]["application/json"]
            schema = resolve(spec, media["schema"])
            enum = schema["properties"]["error"]["properties"]["code"]["enum"]
            assert enum == codes_of(int(status)), (path, method, status)
            assert schema["properties"]["error"]["allOf"] == [
                {"$ref": "#/components/schemas/ErrorBody"}
            ]
            # An example per code the operation can answer, each valid by the schema.
            assert media["examples"], (path, method, status)
            check = validator(spec, media["schema"])
            for example in media["examples"].values():
                assert example["value"]["error"]["code"] in enum
                check.validate(example["value"])
            checked += 1
    assert checked > 60  # 17 operations, 3 to 9 error statuses each


async def test_every_stable_code_is_in_the_enum_once_with_one_status() -> None:
    raised = {
        error.code
        for error in vars(domain_errors).values()
        if isinstance(error, type)
        and issubclass(error, domain_errors.BankingError)
        # A wrapper: the batch route answers its failing item's error (with the index).
        and error is not domain_errors.BatchItemFailed
    }
    assert raised <= set(ErrorCode)
    assert set(ERROR_CODES) <= set(ErrorCode)
    assert set(HTTP_STATUS_BY_CODE) == set(ErrorCode)


async def test_each_operation_lists_the_errors_it_can_give(spec: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[str]:
        return set(spec["paths"][path][method]["responses"])

    shared = {"429", "500", "503"}
    assert statuses("/api/v1/transactions/debit", "post") == {
        "200", "202", "401", "403", "404", "409", "413", "422", *shared,
    }  # fmt: skip
    assert statuses("/api/v1/transactions/{transaction_id}", "get") == {
        "200", "401", "404", "422", *shared,
    }  # fmt: skip
    assert statuses("/api/v1/auth/token", "post") == {"200", "401", "413", "422", *shared}
    assert statuses("/api/v1/accounts/{account_id}/balance", "get") == {
        "200", "304", "401", "404", "422", *shared,
    }  # fmt: skip
    token = spec["paths"]["/api/v1/auth/token"]["post"]["responses"]
    assert set(token["422"]["content"]["application/json"]["examples"]) == {"VALIDATION_ERROR"}
    debit = spec["paths"]["/api/v1/transactions/debit"]["post"]["responses"]
    assert set(debit["422"]["content"]["application/json"]["examples"]) == {
        "VALIDATION_ERROR",
        "INSUFFICIENT_FUNDS",
        "CURRENCY_MISMATCH",
    }
    assert set(debit["409"]["content"]["application/json"]["examples"]) == {
        "ACCOUNT_INACTIVE",
        "IDEMPOTENCY_CONFLICT",
        "ACCOUNT_BUSY",
    }


# --- headers -----------------------------------------------------------------------------


def header_of(spec: dict[str, Any], response: dict[str, Any], name: str) -> dict[str, Any]:
    reference = response["headers"][name]
    return {**resolve(spec, reference), "required": reference.get("required", False)}


async def test_rate_limits_outages_and_ids_are_documented_on_every_operation(
    spec: dict[str, Any],
) -> None:
    api_operations = 0
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            for name in ("X-Request-ID", "X-Trace-ID"):
                assert header_of(spec, response, name)["required"], (path, method, status, name)
        if not path.startswith("/api/"):
            continue
        api_operations += 1
        answers = operation["responses"]
        for name in ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert header_of(spec, answers["429"], name)["required"], (path, method, name)
        assert header_of(spec, answers["503"], "Retry-After")["required"], (path, method)
        assert header_of(spec, answers["401"], "WWW-Authenticate")["required"], (path, method)
        success = next(status for status in ("200", "201", "204") if status in answers)
        assert "RateLimit-Remaining" in answers[success]["headers"]
        if "requestBody" in operation:
            assert "413" in answers, (path, method)
    assert api_operations >= 13


async def test_success_headers_are_documented(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    opened = paths["/api/v1/accounts"]["post"]["responses"]["201"]
    assert header_of(spec, opened, "Location")["required"]
    balance = paths["/api/v1/accounts/{account_id}/balance"]["get"]["responses"]
    assert header_of(spec, balance["200"], "ETag")["required"]
    assert header_of(spec, balance["304"], "ETag")["required"]
    for endpoint in ("debit", "credit", "transfer"):
        answers = paths[f"/api/v1/transactions/{endpoint}"]["post"]["responses"]
        for status in ("200", "202", "409", "422"):
            assert not header_of(spec, answers[status], "Idempotent-Replayed")["required"]
        assert header_of(spec, answers["202"], "Location")["required"]
        assert header_of(spec, answers["202"], "Preference-Applied")["required"]
    history = paths["/api/v1/accounts/{account_id}/transactions"]["get"]["responses"]["200"]
    assert "X-Next-Cursor" in history["headers"]


async def test_the_documented_headers_are_the_ones_sent(bank: Bank, accounts: Accounts) -> None:
    """A debit answered, replayed and refused carries the headers its responses document."""
    spec = (await bank.client.get("/openapi.json")).json()
    answers = spec["paths"]["/api/v1/transactions/debit"]["post"]["responses"]
    body = {"account_id": accounts.usd, "amount": "1.00", "currency": "USD", "reference_id": "h1"}
    debit = await bank.client.post(
        "/api/v1/transactions/debit", json=body, headers=accounts.customer
    )
    replay = await bank.client.post(
        "/api/v1/transactions/debit", json=body, headers=accounts.customer
    )
    refused = await bank.client.post("/api/v1/transactions/debit", json=body)
    for response in (debit, replay, refused):
        documented = answers[str(response.status_code)]["headers"]
        for name, reference in documented.items():
            if reference.get("required"):
                assert name.lower() in response.headers, (response.status_code, name)
        check = validator(
            spec, answers[str(response.status_code)]["content"]["application/json"]["schema"]
        )
        check.validate(response.json())
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert refused.headers["WWW-Authenticate"] == "Bearer"


# --- examples, enums, ids, links ---------------------------------------------------------


def examples_of(spec: dict[str, Any], media: dict[str, Any]) -> list[Any]:
    found = [example["value"] for example in media.get("examples", {}).values()]
    if "example" in media:
        found.append(media["example"])
    return found + list(resolve(spec, media.get("schema", {})).get("examples", []))


async def test_every_json_body_has_valid_examples(spec: dict[str, Any]) -> None:
    bodies = 0
    for path, method, operation in operations(spec):
        media_types = [
            (f"request {media_type}", media)
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items()
        ]
        media_types += [
            (f"{status} {media_type}", media)
            for status, response in operation["responses"].items()
            for media_type, media in response.get("content", {}).items()
            if "json" in media_type
        ]
        for where, media in media_types:
            examples = examples_of(spec, media)
            assert examples, (path, method, where)
            if "json" in where:
                check = validator(spec, media["schema"])
                for example in examples:
                    check.validate(example)
            bodies += 1
    assert bodies > 100


async def test_operation_ids_are_readable_and_unique(spec: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-zA-Z]+", operation_id) for operation_id in ids), ids
    assert {
        "issueToken", "getCurrentUser", "createUser", "openAccount", "listAccounts",
        "getAccount", "updateAccount", "getBalance", "listAccountTransactions", "debitAccount",
        "creditAccount", "transferBetweenAccounts", "getTransaction", "health", "ready",
    } <= set(ids)  # fmt: skip


async def test_enums_are_enums(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    leg = schemas["TransactionRead"]["properties"]
    assert resolve(spec, leg["transaction_type"])["enum"] == [
        "debit", "credit", "transfer_out", "transfer_in",
    ]  # fmt: skip
    assert resolve(spec, leg["status"])["enum"] == ["pending", "completed", "failed"]
    assert {"$ref": "#/components/schemas/ErrorCode"} in leg["failure_code"]["anyOf"]
    assert "JPY" in leg["currency"]["enum"] and "XXX" not in leg["currency"]["enum"]
    assert schemas["AccountRead"]["properties"]["account_type"]["enum"] == [
        "business", "checking", "loan", "savings",
    ]  # fmt: skip
    assert resolve(spec, schemas["UserRead"]["properties"]["role"])["enum"] == [
        role.value for role in Role
    ]
    assert schemas["TokenRead"]["properties"]["token_type"]["const"] == "bearer"
    ready = schemas["ReadyRead"]["properties"]
    assert ready["status"]["enum"] == ["ready", "degraded", "unavailable"]


async def test_links_lead_from_what_a_call_creates_to_what_reads_it(spec: dict[str, Any]) -> None:
    ids = {operation["operationId"] for _, _, operation in operations(spec)}
    paths = spec["paths"]
    opened = paths["/api/v1/accounts"]["post"]["responses"]["201"]["links"]
    assert opened["getAccount"]["parameters"] == {"account_id": "$response.body#/account_id"}
    assert opened["creditAccount"]["requestBody"] == {
        "account_id": "$response.body#/account_id",
        "currency": "$response.body#/currency",
    }
    for endpoint in ("debit", "credit", "transfer"):
        answers = paths[f"/api/v1/transactions/{endpoint}"]["post"]["responses"]
        for status in ("200", "202"):
            assert answers[status]["links"]["getTransaction"]["parameters"] == {
                "transaction_id": "$response.body#/transaction_id"
            }
    links = [
        link
        for _, _, operation in operations(spec)
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 15 and {link["operationId"] for link in links} <= ids


async def test_page_size_maximum_is_the_configured_one(spec: dict[str, Any], bank: Bank) -> None:
    history = spec["paths"]["/api/v1/accounts/{account_id}/transactions"]["get"]
    (page_size,) = [p for p in history["parameters"] if p["name"] == "page_size"]
    (integer,) = [b for b in page_size["schema"]["anyOf"] if b.get("type") == "integer"]
    assert integer["maximum"] == bank.container.settings.page_size_max
    assert integer["minimum"] == 1


# --- the HTTP details the document describes ------------------------------------------------


async def test_405_allows_every_method_of_the_path(bank: Bank, accounts: Accounts) -> None:
    spec = (await bank.client.get("/openapi.json")).json()
    before = await bank.snapshot()
    for path, item in spec["paths"].items():
        documented = {method.upper() for method in item if method in METHODS}
        concrete = re.sub(r"\{[a-z_]+\}", accounts.usd, path)
        for method in ("OPTIONS", "DELETE", "PUT"):
            if method in documented:
                continue
            response = await bank.client.request(method, concrete, headers=accounts.staff)
            assert_error(response, 405, "METHOD_NOT_ALLOWED")
            assert set(response.headers["Allow"].split(", ")) == documented, (method, path)
    assert await bank.snapshot() == before
    one = await bank.client.options(f"/api/v1/accounts/{accounts.usd}", headers=accounts.staff)
    assert one.headers["Allow"] == "GET, PATCH"
    listing = await bank.client.delete("/api/v1/accounts", headers=accounts.staff)
    assert listing.headers["Allow"] == "GET, POST"


@pytest.mark.parametrize("endpoint", ["debit", "credit", "transfer"])
async def test_a_post_only_path_answers_405_not_a_transaction_id(
    bank: Bank, accounts: Accounts, endpoint: str
) -> None:
    before = await bank.snapshot()
    response = await bank.client.get(f"/api/v1/transactions/{endpoint}", headers=accounts.staff)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["Allow"] == "POST"
    assert await bank.snapshot() == before
    # A malformed id is still a malformed id, and POST to a leg's path is still 405.
    malformed = await bank.client.get("/api/v1/transactions/creditx", headers=accounts.staff)
    assert_error(malformed, 422, "VALIDATION_ERROR", "path.transaction_id")
    posted = await bank.client.post(f"/api/v1/transactions/{accounts.usd}", headers=accounts.staff)
    assert_error(posted, 405, "METHOD_NOT_ALLOWED")
    assert posted.headers["Allow"] == "GET"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("to", "0.5"),
        ("from", "1700000000"),
        ("from", "2026-01-31"),
        ("to", "2026-01-31T00:00:00"),
        ("from", "2026-01-31 00:00:00Z"),
        ("to", "31/01/2026"),
    ],
)
async def test_history_times_are_rfc3339_date_times_with_a_zone(
    bank: Bank, accounts: Accounts, name: str, value: str
) -> None:
    before = await bank.snapshot()
    response = await bank.client.get(
        f"/api/v1/accounts/{accounts.usd}/transactions",
        params={name: value},
        headers=accounts.customer,
    )
    error = assert_error(response, 422, "VALIDATION_ERROR", f"query.{name}")
    assert "RFC 3339" in error["message"]
    assert await bank.snapshot() == before


async def test_history_takes_rfc3339_times_with_any_zone(bank: Bank, accounts: Accounts) -> None:
    url = f"/api/v1/accounts/{accounts.usd}/transactions"
    everything = await bank.client.get(url, headers=accounts.customer)
    assert everything.status_code == 200 and len(everything.json()["transactions"]) == 1
    for params, legs in (
        ({"from": "2000-01-01T00:00:00Z"}, 1),
        ({"from": "2000-01-01T02:00:00.5+02:00", "to": "9999-01-01T00:00:00z"}, 1),
        ({"to": "2000-01-01T00:00:00-05:00"}, 0),
    ):
        response = await bank.client.get(url, params=params, headers=accounts.customer)
        assert response.status_code == 200, (params, response.text)
        assert len(response.json()["transactions"]) == legs, params
