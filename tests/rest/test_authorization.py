"""Who may do what (DESIGN.md section 5), and which tokens are refused, over REST.

A customer never sees another customer's account: it answers 404, not 403, so ids cannot be
probed. Crediting needs a teller or an admin, auditors read everything and move nothing, only
admins create users. Every refusal uses the error envelope and changes nothing.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from banking.domain.roles import Role
from banking.storage.tables import accounts as accounts_table
from banking.storage.tables import users as users_table
from tests.conftest import Bank


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["trace_id"] == response.headers["x-trace-id"]
    assert datetime.fromisoformat(error["timestamp"]).tzinfo is not None
    return error


async def row_count(bank: Bank, table: Any) -> int:
    async with bank.container.database.read() as connection:
        count: int = (
            await connection.execute(select(func.count()).select_from(table))
        ).scalar_one()
    return count


@dataclass
class World:
    alice_id: uuid.UUID
    alice: dict[str, str]
    bob_id: uuid.UUID
    bob: dict[str, str]
    staff: dict[str, str]
    auditor: dict[str, str]
    admin: dict[str, str]
    alice_account: str
    bob_account: str
    bob_transaction: str


@pytest.fixture
async def world(bank: Bank, staff: dict[str, str]) -> AsyncIterator[World]:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, bob = await bank.user(Role.CUSTOMER)
    _, auditor = await bank.user(Role.AUDITOR)
    _, admin = await bank.user(Role.ADMIN)
    alice_account = await bank.account(alice_id, staff, funded="100.00")
    bob_account = await bank.account(bob_id, staff, funded="50.00")
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": bob_account, "amount": "5.00", "currency": "USD"},
        headers=bob,
    )
    assert debit.status_code == 200, debit.text
    yield World(
        alice_id,
        alice,
        bob_id,
        bob,
        staff,
        auditor,
        admin,
        alice_account,
        bob_account,
        debit.json()["transaction_id"],
    )


# --- customers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/v1/accounts/{bob_account}", "ACCOUNT_NOT_FOUND"),
        ("/api/v1/accounts/{bob_account}/balance", "ACCOUNT_NOT_FOUND"),
        ("/api/v1/accounts/{bob_account}/transactions", "ACCOUNT_NOT_FOUND"),
        ("/api/v1/transactions/{bob_transaction}", "TRANSACTION_NOT_FOUND"),
    ],
)
async def test_customer_cannot_read_another_customers_account(
    bank: Bank, world: World, path: str, code: str
) -> None:
    url = path.format(bob_account=world.bob_account, bob_transaction=world.bob_transaction)
    refused = await bank.client.get(url, headers=world.alice)
    error = assert_error(refused, 404, code)
    assert world.bob_account not in json.dumps(error["message"])
    # The same answer as for an id that does not exist at all: nothing to probe.
    missing = await bank.client.get(
        url.replace(world.bob_account, str(uuid.uuid4())).replace(
            world.bob_transaction, str(uuid.uuid4())
        ),
        headers=world.alice,
    )
    assert_error(missing, 404, code)
    assert missing.json()["error"]["message"] == error["message"]
    # The owner does see it.
    assert (await bank.client.get(url, headers=world.bob)).status_code == 200


async def test_customer_lists_and_finds_only_their_own_accounts(bank: Bank, world: World) -> None:
    mine = await bank.client.get("/api/v1/accounts", headers=world.alice)
    assert mine.status_code == 200
    assert [a["account_id"] for a in mine.json()["accounts"]] == [world.alice_account]
    bob_number = (
        await bank.client.get(f"/api/v1/accounts/{world.bob_account}", headers=world.bob)
    ).json()["account_number"]
    by_number = await bank.client.get(
        "/api/v1/accounts", params={"account_number": bob_number}, headers=world.alice
    )
    assert_error(by_number, 404, "ACCOUNT_NOT_FOUND")


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("debit", {"account_id": "{bob}", "amount": "1.00", "currency": "USD"}),
        (
            "transfer",
            {
                "source_account_id": "{bob}",
                "destination_account_id": "{alice}",
                "amount": "1.00",
                "currency": "USD",
            },
        ),
    ],
)
async def test_customer_cannot_move_money_out_of_another_customers_account(
    bank: Bank, world: World, endpoint: str, body: dict[str, str]
) -> None:
    filled = {
        key: value.format(bob=world.bob_account, alice=world.alice_account)
        for key, value in body.items()
    }
    before = await bank.snapshot()
    response = await bank.client.post(
        f"/api/v1/transactions/{endpoint}", json=filled, headers=world.alice
    )
    assert_error(response, 404, "ACCOUNT_NOT_FOUND")
    assert await bank.snapshot() == before
    assert await bank.balance(world.bob_account, world.bob) == Decimal("45.00")


@pytest.mark.parametrize("own", [True, False], ids=["own-account", "other-account"])
async def test_customer_cannot_credit(bank: Bank, world: World, own: bool) -> None:
    account = world.alice_account if own else world.bob_account
    before = await bank.snapshot()
    response = await bank.client.post(
        "/api/v1/transactions/credit",
        json={"account_id": account, "amount": "1000.00", "currency": "USD"},
        headers=world.alice,
    )
    assert_error(response, 403, "FORBIDDEN")
    assert await bank.snapshot() == before


async def test_customer_transfers_from_own_account_to_another_customer(
    bank: Bank, world: World
) -> None:
    response = await bank.client.post(
        "/api/v1/transactions/transfer",
        json={
            "source_account_id": world.alice_account,
            "destination_account_id": world.bob_account,
            "amount": "30.00",
            "currency": "USD",
        },
        headers=world.alice,
    )
    assert response.status_code == 200, response.text
    assert response.json()["available_balance"] == "70.00"
    assert await bank.balance(world.alice_account, world.alice) == Decimal("70.00")
    assert await bank.balance(world.bob_account, world.bob) == Decimal("75.00")
    # Alice still cannot read Bob's incoming leg or his balance.
    in_leg = response.json()["related_transaction_id"]
    assert_error(
        await bank.client.get(f"/api/v1/transactions/{in_leg}", headers=world.alice),
        404,
        "TRANSACTION_NOT_FOUND",
    )
    assert (await bank.client.get(f"/api/v1/transactions/{in_leg}", headers=world.bob)).json()[
        "transaction_type"
    ] == "transfer_in"


async def test_customer_opens_only_their_own_account(bank: Bank, world: World) -> None:
    accounts_before = await row_count(bank, accounts_table)
    for_bob = await bank.client.post(
        "/api/v1/accounts",
        json={"account_type": "savings", "currency": "USD", "customer_id": str(world.bob_id)},
        headers=world.alice,
    )
    error = assert_error(for_bob, 422, "VALIDATION_ERROR")
    assert {"field": "customer_id"} in error["details"]
    assert await row_count(bank, accounts_table) == accounts_before

    implicit = await bank.client.post(
        "/api/v1/accounts",
        json={"account_type": "savings", "currency": "EUR"},
        headers=world.alice,
    )
    assert implicit.status_code == 201, implicit.text
    assert implicit.json()["customer_id"] == str(world.alice_id)
    explicit = await bank.client.post(
        "/api/v1/accounts",
        json={"account_type": "checking", "currency": "USD", "customer_id": str(world.alice_id)},
        headers=world.alice,
    )
    assert explicit.status_code == 201, explicit.text
    assert explicit.json()["customer_id"] == str(world.alice_id)
    mine = await bank.client.get("/api/v1/accounts", headers=world.alice)
    assert len(mine.json()["accounts"]) == 3


async def test_customer_cannot_freeze_an_account(bank: Bank, world: World) -> None:
    before = await bank.snapshot()
    own = await bank.client.patch(
        f"/api/v1/accounts/{world.alice_account}", json={"is_active": False}, headers=world.alice
    )
    assert_error(own, 403, "FORBIDDEN")
    other = await bank.client.patch(
        f"/api/v1/accounts/{world.bob_account}", json={"is_active": False}, headers=world.alice
    )
    assert_error(other, 403, "FORBIDDEN")  # refused for the role, whoever owns the account
    assert await bank.snapshot() == before
    account = await bank.client.get(f"/api/v1/accounts/{world.alice_account}", headers=world.alice)
    assert account.json()["is_active"] is True


# --- auditors, tellers, admins ----------------------------------------------------------


async def test_auditor_reads_everything(bank: Bank, world: World) -> None:
    for account in (world.alice_account, world.bob_account):
        assert (
            await bank.client.get(f"/api/v1/accounts/{account}", headers=world.auditor)
        ).status_code == 200
        history = await bank.client.get(
            f"/api/v1/accounts/{account}/transactions", headers=world.auditor
        )
        assert history.status_code == 200 and history.json()["transactions"]
    assert await bank.balance(world.bob_account, world.auditor) == Decimal("45.00")
    leg = await bank.client.get(
        f"/api/v1/transactions/{world.bob_transaction}", headers=world.auditor
    )
    assert leg.status_code == 200 and leg.json()["amount"] == "5.00"
    listed = await bank.client.get("/api/v1/accounts", headers=world.auditor)
    assert {world.alice_account, world.bob_account} <= {
        a["account_id"] for a in listed.json()["accounts"]
    }


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("debit", {"account_id": "{alice}", "amount": "1.00", "currency": "USD"}),
        ("credit", {"account_id": "{alice}", "amount": "1.00", "currency": "USD"}),
        (
            "transfer",
            {
                "source_account_id": "{alice}",
                "destination_account_id": "{bob}",
                "amount": "1.00",
                "currency": "USD",
            },
        ),
    ],
)
async def test_auditor_moves_no_money(
    bank: Bank, world: World, endpoint: str, body: dict[str, str]
) -> None:
    filled = {
        key: value.format(bob=world.bob_account, alice=world.alice_account)
        for key, value in body.items()
    }
    before = await bank.snapshot()
    response = await bank.client.post(
        f"/api/v1/transactions/{endpoint}", json=filled, headers=world.auditor
    )
    assert_error(response, 403, "FORBIDDEN")
    assert await bank.snapshot() == before


async def test_auditor_cannot_open_or_freeze_accounts(bank: Bank, world: World) -> None:
    before = await bank.snapshot()
    opened = await bank.client.post(
        "/api/v1/accounts",
        json={"account_type": "checking", "currency": "USD", "customer_id": str(world.alice_id)},
        headers=world.auditor,
    )
    assert_error(opened, 403, "FORBIDDEN")
    frozen = await bank.client.patch(
        f"/api/v1/accounts/{world.alice_account}",
        json={"is_active": False},
        headers=world.auditor,
    )
    assert_error(frozen, 403, "FORBIDDEN")
    assert await bank.snapshot() == before


async def test_teller_credits_and_debits_any_account(bank: Bank, world: World) -> None:
    for account in (world.alice_account, world.bob_account):
        credit = await bank.client.post(
            "/api/v1/transactions/credit",
            json={"account_id": account, "amount": "10.00", "currency": "USD"},
            headers=world.staff,
        )
        assert credit.status_code == 200, credit.text
    assert await bank.balance(world.alice_account, world.alice) == Decimal("110.00")
    assert await bank.balance(world.bob_account, world.bob) == Decimal("55.00")
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": world.bob_account, "amount": "5.00", "currency": "USD"},
        headers=world.staff,
    )
    assert debit.status_code == 200, debit.text
    assert await bank.balance(world.bob_account, world.bob) == Decimal("50.00")


@pytest.mark.parametrize("role", ["customer", "teller", "auditor"])
async def test_only_admin_creates_users(bank: Bank, world: World, role: str) -> None:
    headers = {"customer": world.alice, "teller": world.staff, "auditor": world.auditor}[role]
    body = {
        "username": f"new-{uuid.uuid4().hex[:8]}",
        "email": "new@example.com",
        "password": "a-long-enough-password",
        "role": "admin",
    }
    users_before = await row_count(bank, users_table)
    refused = await bank.client.post("/api/v1/users", json=body, headers=headers)
    assert_error(refused, 403, "FORBIDDEN")
    assert await row_count(bank, users_table) == users_before
    login = await bank.client.post(
        "/api/v1/auth/token", data={"username": body["username"], "password": body["password"]}
    )
    assert_error(login, 401, "UNAUTHENTICATED")

    created = await bank.client.post("/api/v1/users", json=body, headers=world.admin)
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "admin"
    assert "password" not in created.text
    assert await row_count(bank, users_table) == users_before + 1


async def test_admin_cannot_create_a_user_with_a_nul_in_the_email(bank: Bank, world: World) -> None:
    """U+0000 is not part of any e-mail address (and PostgreSQL text cannot store it)."""
    users_before = await row_count(bank, users_table)
    response = await bank.client.post(
        "/api/v1/users",
        json={
            "username": "nul-mail",
            "email": "nul\u0000@example.com",
            "password": "a-long-enough-password",
        },
        headers=world.admin,
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert "email" in [detail.get("field") for detail in error.get("details", [])], error
    assert await row_count(bank, users_table) == users_before


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"username": "ali\u0000ce", "password": "correct-horse-battery"}, 401, "UNAUTHENTICATED"),
        ({"username": "nobody", "password": "pass\u0000word"}, 401, "UNAUTHENTICATED"),
        ({"username": "x" * 10_000, "password": "y" * 10_000}, 401, "UNAUTHENTICATED"),
        ({"username": "", "password": ""}, 422, "VALIDATION_ERROR"),
    ],
    ids=["nul-in-username", "nul-in-password", "very-long", "empty"],
)
async def test_odd_login_form_is_refused_cleanly(
    bank: Bank, form: dict[str, str], status: int, code: str
) -> None:
    users_before = await row_count(bank, users_table)
    response = await bank.client.post("/api/v1/auth/token", data=form)
    assert_error(response, status, code)
    assert "access_token" not in response.text
    assert await row_count(bank, users_table) == users_before


# --- tokens ----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url_json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def claims_for(bank: Bank, user_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    settings = bank.container.settings
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "username": "alice",
        "role": "customer",
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def forged(
    bank: Bank,
    user_id: uuid.UUID,
    *,
    secret: str | None = None,
    algorithm: str = "HS256",
    **overrides: Any,
) -> str:
    key = secret or bank.container.settings.jwt_signing_secret()
    return jwt.encode(claims_for(bank, user_id, **overrides), key, algorithm=algorithm)


def flip_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(signature) // 2  # not the last character: its low bits are only padding
    replacement = "A" if signature[middle] != "A" else "B"
    return ".".join([header, payload, signature[:middle] + replacement + signature[middle + 1 :]])


def promote_without_resigning(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = unb64url_json(payload) | {"role": "admin"}
    return ".".join([header, b64url_json(claims), signature])


def alg_none(bank: Bank, user_id: uuid.UUID) -> str:
    claims = claims_for(bank, user_id)
    claims["iat"] = int(claims["iat"].timestamp())
    claims["exp"] = int(claims["exp"].timestamp())
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{b64url_json(claims)}."


TokenMaker = Callable[[Bank, World], "str | None"]

BAD_TOKENS: dict[str, TokenMaker] = {
    "missing": lambda bank, world: None,
    "empty": lambda bank, world: "",
    "garbage": lambda bank, world: "not.a.jwt",
    "tampered-signature": lambda bank, world: flip_signature(
        world.alice["Authorization"].removeprefix("Bearer ")
    ),
    "role-changed-to-admin": lambda bank, world: promote_without_resigning(
        world.alice["Authorization"].removeprefix("Bearer ")
    ),
    "expired": lambda bank, world: forged(
        bank,
        world.alice_id,
        iat=datetime.now(UTC) - timedelta(hours=2),
        exp=datetime.now(UTC) - timedelta(hours=1),
    ),
    "alg-none": lambda bank, world: alg_none(bank, world.alice_id),
    "wrong-audience": lambda bank, world: forged(bank, world.alice_id, aud="someone-else"),
    "wrong-issuer": lambda bank, world: forged(bank, world.alice_id, iss="evil-issuer"),
    "other-secret": lambda bank, world: forged(
        bank, world.alice_id, secret="another-secret-that-is-long-enough-9876543210"
    ),
    "other-algorithm-same-secret": lambda bank, world: forged(
        bank, world.alice_id, algorithm="HS512"
    ),
    "without-exp": lambda bank, world: forged(bank, world.alice_id, exp=None),
    "unknown-role": lambda bank, world: forged(bank, world.alice_id, role="superuser"),
    "subject-not-a-uuid": lambda bank, world: forged(bank, world.alice_id, sub="alice"),
}


async def test_a_forged_token_with_the_real_claims_is_accepted(bank: Bank, world: World) -> None:
    """The control for the cases below: each differs from this token in one thing only."""
    token = forged(bank, world.alice_id)
    response = await bank.client.get(
        f"/api/v1/accounts/{world.alice_account}/balance",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["available_balance"] == "100.00"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_token_is_unauthenticated_and_changes_nothing(
    bank: Bank, world: World, kind: str
) -> None:
    token = BAD_TOKENS[kind](bank, world)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    requests = [
        ("GET", f"/api/v1/accounts/{world.alice_account}/balance", None),
        ("GET", "/api/v1/users/me", None),
        (
            "POST",
            "/api/v1/transactions/debit",
            {"account_id": world.alice_account, "amount": "1.00", "currency": "USD"},
        ),
        (
            "POST",
            "/api/v1/transactions/transfer",
            {
                "source_account_id": world.alice_account,
                "destination_account_id": world.bob_account,
                "amount": "1.00",
                "currency": "USD",
            },
        ),
        (
            "POST",
            "/api/v1/transactions/credit",
            {"account_id": world.alice_account, "amount": "1.00", "currency": "USD"},
        ),
        ("POST", "/api/v1/accounts", {"account_type": "checking", "currency": "USD"}),
    ]
    before = await bank.snapshot()
    for method, path, body in requests:
        response = await bank.client.request(method, path, json=body, headers=headers)
        assert_error(response, 401, "UNAUTHENTICATED")
        assert response.headers.get("www-authenticate") == "Bearer", (path, response.headers)
        assert "100.00" not in response.text
    assert await bank.snapshot() == before


async def test_non_bearer_scheme_is_unauthenticated(bank: Bank, world: World) -> None:
    token = world.alice["Authorization"].removeprefix("Bearer ")
    for value in (f"Basic {token}", f"Token {token}", token):
        response = await bank.client.get(
            f"/api/v1/accounts/{world.alice_account}/balance", headers={"Authorization": value}
        )
        assert_error(response, 401, "UNAUTHENTICATED")
        assert response.headers.get("www-authenticate") == "Bearer"
