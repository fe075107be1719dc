"""``PATCH /api/v1/users/{id}``: admins deactivate, reactivate and change the role of users.

Every refusal answers the error envelope and changes no user; every change is written to the
log as ``user_changed`` (who, whom, before and after), like the request log of other staff
actions; an admin cannot lock themselves (and so everyone) out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import select

from banking.domain.roles import Role
from banking.observability.logging import configure_logging
from banking.storage.tables import users as users_table
from tests.auth.conftest import PASSWORD, instance
from tests.conftest import Bank, make_settings


async def all_users(bank: Bank) -> list[tuple[Any, ...]]:
    async with bank.container.database.read() as connection:
        rows = (
            await connection.execute(
                select(
                    users_table.c.user_id,
                    users_table.c.username,
                    users_table.c.role,
                    users_table.c.is_active,
                    users_table.c.password_hash,
                ).order_by(users_table.c.user_id)
            )
        ).all()
    return [tuple(row) for row in rows]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error


async def test_an_admin_deactivates_and_reactivates_a_user(bank: Bank) -> None:
    _, admin = await bank.user(Role.ADMIN)
    user_id, customer = await bank.user(Role.CUSTOMER)
    assert (await bank.client.get("/api/v1/users/me", headers=customer)).status_code == 200

    response = await bank.client.patch(
        f"/api/v1/users/{user_id}", json={"is_active": False}, headers=admin
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == str(user_id)
    assert body["is_active"] is False
    assert body["role"] == "customer"
    assert "password" not in response.text and "password_hash" not in body
    me = await bank.client.get("/api/v1/users/me", headers=customer)
    assert_error(me, 401, "UNAUTHENTICATED")

    back = await bank.client.patch(
        f"/api/v1/users/{user_id}", json={"is_active": True}, headers=admin
    )
    assert back.status_code == 200 and back.json()["is_active"] is True
    assert (await bank.client.get("/api/v1/users/me", headers=customer)).json()["is_active"]


async def test_an_admin_changes_a_role_and_both_fields_at_once(bank: Bank) -> None:
    _, admin = await bank.user(Role.ADMIN)
    user_id, teller = await bank.user(Role.TELLER)

    response = await bank.client.patch(
        f"/api/v1/users/{user_id}", json={"role": "auditor", "is_active": True}, headers=admin
    )

    assert response.status_code == 200, response.text
    assert response.json()["role"] == "auditor"
    me = await bank.client.get("/api/v1/users/me", headers=teller)
    assert me.json()["role"] == "auditor"  # the same token, the role the table says


@pytest.mark.parametrize(
    ("who", "path", "body", "status", "code"),
    [
        (None, "target", {"is_active": False}, 401, "UNAUTHENTICATED"),
        (Role.CUSTOMER, "target", {"is_active": False}, 403, "FORBIDDEN"),
        (Role.TELLER, "target", {"is_active": False}, 403, "FORBIDDEN"),
        (Role.AUDITOR, "target", {"role": "admin"}, 403, "FORBIDDEN"),
        (Role.ADMIN, "unknown", {"is_active": False}, 404, "USER_NOT_FOUND"),
        (Role.ADMIN, "not-a-uuid", {"is_active": False}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "target", {}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "target", {"is_active": None, "role": None}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "target", {"role": "superuser"}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "target", {"is_active": "maybe"}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "target", {"username": "renamed"}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "target", {"password": "a-new-password-123"}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "target", [{"is_active": False}], 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "self", {"is_active": False}, 422, "VALIDATION_ERROR"),
        (Role.ADMIN, "self", {"role": "customer"}, 422, "VALIDATION_ERROR"),
    ],
    ids=[
        "no-token",
        "customer",
        "teller",
        "auditor-promoting",
        "unknown-user",
        "id-not-a-uuid",
        "empty-body",
        "only-nulls",
        "unknown-role",
        "is-active-not-a-boolean",
        "unknown-field",
        "password-not-changeable-here",
        "body-not-an-object",
        "admin-deactivating-themselves",
        "admin-demoting-themselves",
    ],
)
async def test_a_refused_change_answers_its_error_and_changes_no_user(
    bank: Bank, who: Role | None, path: str, body: Any, status: int, code: str
) -> None:
    target_id, target = await bank.user(Role.TELLER)
    caller_id, headers = (None, {}) if who is None else await bank.user(who)
    user_id = {"target": target_id, "self": caller_id, "unknown": uuid.uuid4()}.get(path, path)
    before = await all_users(bank)

    response = await bank.client.patch(f"/api/v1/users/{user_id}", json=body, headers=headers)

    error = assert_error(response, status, code)
    if path == "self":
        assert "own account" in error["message"]
    assert await all_users(bank) == before
    # The target's token still works as before.
    assert (await bank.client.get("/api/v1/users/me", headers=target)).json()["role"] == "teller"


async def test_an_admin_may_resend_their_own_role(bank: Bank) -> None:
    admin_id, admin = await bank.user(Role.ADMIN)
    response = await bank.client.patch(
        f"/api/v1/users/{admin_id}", json={"role": "admin", "is_active": True}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"


async def test_an_admin_deactivated_elsewhere_cannot_manage_users_even_before_the_bound(
    database_url: str,
) -> None:
    """The authentication check may be up to TOKEN_USER_RECHECK_SECONDS old; changing a user
    checks the admin again in the same transaction, so a deactivated admin changes nothing."""
    settings = make_settings(database_url, token_user_recheck_seconds=3600)
    async with instance(settings) as first, instance(settings) as second:
        _, admin = await first.bank.user(Role.ADMIN)
        rogue_id, rogue = await first.bank.user(Role.ADMIN)
        victim_id, _ = await first.bank.user(Role.CUSTOMER)
        # The second instance has seen the rogue admin as active (for the next hour).
        assert (await second.bank.client.get("/api/v1/users/me", headers=rogue)).status_code == 200

        deactivated = await first.bank.client.patch(
            f"/api/v1/users/{rogue_id}", json={"is_active": False}, headers=admin
        )
        assert deactivated.status_code == 200
        before = await all_users(second.bank)
        response = await second.bank.client.patch(
            f"/api/v1/users/{victim_id}", json={"role": "admin"}, headers=rogue
        )

        assert_error(response, 403, "FORBIDDEN")
        assert await all_users(second.bank) == before


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(bank: Bank) -> None:
    first_id, first = await bank.user(Role.ADMIN)
    second_id, second = await bank.user(Role.ADMIN)

    responses = await asyncio.gather(
        bank.client.patch(f"/api/v1/users/{second_id}", json={"role": "teller"}, headers=first),
        bank.client.patch(f"/api/v1/users/{first_id}", json={"role": "teller"}, headers=second),
    )

    assert sorted(response.status_code for response in responses) == [200, 403]
    roles = {row[0]: row[2] for row in await all_users(bank)}
    assert sorted([roles[first_id], roles[second_id]]) == ["admin", "teller"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo the test's configure_logging, so other tests keep pytest's logging set-up."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)


async def test_every_change_is_logged_with_who_whom_before_and_after(
    bank: Bank, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(level="INFO", json_output=True)
    admin_id, admin = await bank.user(Role.ADMIN)
    user_id, _ = await bank.user(Role.TELLER)
    capsys.readouterr()

    response = await bank.client.patch(
        f"/api/v1/users/{user_id}",
        json={"is_active": False, "role": "customer"},
        headers={**admin, "X-Request-ID": "deactivate-teller"},
    )
    refused = await bank.client.patch(
        f"/api/v1/users/{admin_id}", json={"is_active": False}, headers=admin
    )

    assert response.status_code == 200 and refused.status_code == 422
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    changes = [line for line in lines if line.get("event") == "user_changed"]
    assert len(changes) == 1, lines  # the refused change is not logged as one
    (change,) = changes
    assert change["changed_user_id"] == str(user_id)
    assert change["by_user_id"] == str(admin_id)
    assert change["request_id"] == "deactivate-teller"
    assert change["is_active_before"] is True and change["is_active_after"] is False
    assert change["role_before"] == "teller" and change["role_after"] == "customer"
    output = captured.err + captured.out
    assert PASSWORD not in output
    assert admin["Authorization"].removeprefix("Bearer ") not in output
