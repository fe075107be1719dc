"""Deliveries are signed as docs/webhooks.md says: its snippet verifies a real delivery, and
fails on a tampered body, timestamp or secret."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from banking.domain.roles import Role
from banking.notifications.signing import signature_header
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank
from tests.notifications.conftest import Receiver, create_webhook, eventually

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"

Verifier = Callable[..., bool]


def documented_verifier() -> Verifier:
    """The Python block of the doc's "Verifying a delivery" section, executed as it is."""
    section = DOC.read_text().split("## Verifying a delivery", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    verifier: Verifier = namespace["verify_banking_signature"]
    return verifier


async def test_a_real_delivery_verifies_with_the_documented_snippet(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents, receiver: Receiver
) -> None:
    verify = documented_verifier()
    customer_id, customer = await bank.user(Role.CUSTOMER)
    webhook = await create_webhook(bank, customer, receiver.url())
    await bank.account(customer_id, staff, funded="50.00")

    async def delivered() -> bool:
        return len(receiver.received) >= 1

    await eventually(delivered, "the credit's delivery")
    request = receiver.received[0]
    header = request.headers["Banking-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert verify(webhook["secret"], header, request.body)

    timestamp = header.split(",")[0].removeprefix("t=")
    tampered_body = request.body.replace(b'"50.00"', b'"5000.00"')
    assert tampered_body != request.body
    assert not verify(webhook["secret"], header, tampered_body)
    later = header.replace(f"t={timestamp}", f"t={int(timestamp) + 1}")
    assert not verify(webhook["secret"], later, request.body)
    assert not verify("whsec_another-secret", header, request.body)


def test_the_snippet_refuses_old_signatures_and_accepts_fresh_ones() -> None:
    verify = documented_verifier()
    body = b'{"id":"x"}'
    fresh = signature_header("whsec_s", body)
    stale = signature_header("whsec_s", body, timestamp=int(time.time()) - 3600)
    assert verify("whsec_s", fresh, body)
    assert not verify("whsec_s", stale, body)
    assert not verify("whsec_s", "v1=" + fresh.split("v1=")[1], body)  # no timestamp
    assert not verify("whsec_s", "garbage", body)
