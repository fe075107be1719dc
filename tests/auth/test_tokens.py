"""Tokens carry ``kid``; several keys verify at once; the rotation procedure of the README works
step by step; EdDSA and RS256 let gRPC instances verify with public keys only; and a token
is refused for an unknown kid or another algorithm family, at both doors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from banking.config import JWT_SECRET_KID
from banking.grpc.client import BankingClientError
from tests.auth.conftest import (
    SECRET_NEW,
    SECRET_OLD,
    Instance,
    customer_with_account,
    hmac_settings,
    instance,
    login,
    refused_over_grpc,
    write_key_pair,
)
from tests.conftest import make_settings


def header_of(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


def hs256_by_hand(claims: dict[str, Any], secret: bytes, kid: Any) -> str:
    """An HS256 token made by hand, for what PyJWT itself refuses to make (a PEM public key
    as the HMAC secret, a kid that is not a string) but an attacker's tool would."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"


async def assert_accepted(door: Instance, token: str, account_id: str, balance: str) -> None:
    rest = await door.rest_balance(token, account_id)
    assert rest.status_code == 200, rest.text
    assert rest.json()["available_balance"] == balance
    assert await door.grpc_balance(token, account_id) == balance


async def assert_refused(door: Instance, token: str, account_id: str) -> None:
    rest = await door.rest_balance(token, account_id)
    assert rest.status_code == 401, rest.text
    assert rest.json()["error"]["code"] == "UNAUTHENTICATED"
    assert rest.json()["error"]["message"] == "token is not valid"
    assert "available_balance" not in rest.text
    outcome = await door.grpc_balance(token, account_id)
    assert refused_over_grpc(outcome), outcome
    assert isinstance(outcome, BankingClientError) and outcome.message == "token is not valid"


# --- rotation of shared secrets (JWT_KEYS) ------------------------------------------------


async def test_rotating_a_shared_secret_step_by_step(database_url: str) -> None:
    """README "Rotating signing keys": 1. add the new key, verification only; 2. sign with
    it; 3. after the token lifetime, remove the old one. Every step is a new deployment on
    the same database (REST and gRPC); tokens issued before a step keep working until the
    key that signed them leaves the ring."""
    both = f"old:{SECRET_OLD},new:{SECRET_NEW}"

    # 0. Today: one key, "old".
    async with instance(hmac_settings(database_url, f"old:{SECRET_OLD}", "old")) as today:
        username, account_id = await customer_with_account(today.bank)
        token_old = await login(today.bank, username)
        assert header_of(token_old)["kid"] == "old"
        await assert_accepted(today, token_old, account_id, "25.00")
        # A token signed with a key this deployment does not have yet is refused: the reason
        # step 1 comes first everywhere.
        early = jwt.encode(
            jwt.decode(token_old, options={"verify_signature": False}),
            SECRET_NEW,
            algorithm="HS256",
            headers={"kid": "new"},
        )
        await assert_refused(today, early, account_id)

    # 1. The new key is added, verification only: "old" still signs.
    async with instance(hmac_settings(database_url, both, "old")) as step1:
        assert header_of(await login(step1.bank, username))["kid"] == "old"
        await assert_accepted(step1, token_old, account_id, "25.00")
        await assert_accepted(step1, early, account_id, "25.00")

    # 2. New tokens are signed with "new"; tokens signed with "old" still verify.
    async with instance(hmac_settings(database_url, both, "new")) as step2:
        token_new = await login(step2.bank, username)
        assert header_of(token_new)["kid"] == "new"
        await assert_accepted(step2, token_new, account_id, "25.00")
        await assert_accepted(step2, token_old, account_id, "25.00")

    # 3. The token lifetime later, "old" is removed: its tokens are refused at both doors.
    async with instance(hmac_settings(database_url, f"new:{SECRET_NEW}", "new")) as step3:
        await assert_accepted(step3, token_new, account_id, "25.00")
        await assert_refused(step3, token_old, account_id)


async def test_jwt_secret_keeps_working_next_to_a_key_ring(database_url: str) -> None:
    """A deployment that used JWT_SECRET moves to JWT_KEYS without logging anyone out: the
    secret is the key "jwt-secret", and tokens issued before key ids existed (no kid) are
    verified with it."""
    async with instance(make_settings(database_url, jwt_secret=SECRET_OLD)) as before:
        username, account_id = await customer_with_account(before.bank)
        token = await login(before.bank, username)
        assert header_of(token)["kid"] == JWT_SECRET_KID
        claims = jwt.decode(token, options={"verify_signature": False})
        without_kid = jwt.encode(claims, SECRET_OLD, algorithm="HS256")
        assert "kid" not in header_of(without_kid)
        await assert_accepted(before, without_kid, account_id, "25.00")

    rotated = make_settings(
        database_url, jwt_secret=SECRET_OLD, jwt_keys=f"next:{SECRET_NEW}", jwt_signing_kid="next"
    )
    async with instance(rotated) as after:
        assert header_of(await login(after.bank, username))["kid"] == "next"
        await assert_accepted(after, token, account_id, "25.00")
        await assert_accepted(after, without_kid, account_id, "25.00")

    async with instance(hmac_settings(database_url, f"next:{SECRET_NEW}", "next")) as done:
        # Without JWT_SECRET there is no key for a token without kid: refused.
        await assert_refused(done, without_kid, account_id)
        await assert_refused(done, token, account_id)


async def test_unknown_or_malformed_kid_is_refused(database_url: str) -> None:
    async with instance(hmac_settings(database_url, f"old:{SECRET_OLD}", "old")) as door:
        username, account_id = await customer_with_account(door.bank)
        claims = jwt.decode(await login(door.bank, username), options={"verify_signature": False})
        for kid in ("other", "", 7, ["old"], {"kid": "old"}, None, "old "):
            token = hs256_by_hand(claims, SECRET_OLD.encode(), kid)
            await assert_refused(door, token, account_id)
        control = hs256_by_hand(claims, SECRET_OLD.encode(), "old")
        await assert_accepted(door, control, account_id, "25.00")
        # No kid, and no JWT_SECRET: refused too (it would otherwise fall back to some key).
        await assert_refused(door, jwt.encode(claims, SECRET_OLD, algorithm="HS256"), account_id)


# --- asymmetric keys: the issuer signs, everyone else verifies with public keys -------------


@pytest.mark.parametrize(("algorithm", "kind"), [("EdDSA", "ed25519"), ("RS256", "rsa")])
async def test_a_grpc_instance_with_public_keys_only_verifies_the_rest_issuers_tokens(
    database_url: str, tmp_path: Path, algorithm: str, kind: str
) -> None:
    private_key, _ = write_key_pair(tmp_path / "keys", "2026-01", kind=kind)
    public_dir = tmp_path / "public"
    public_dir.mkdir()
    (public_dir / "2026-01.pem").write_bytes((tmp_path / "keys" / "2026-01.pem").read_bytes())
    issuer_settings = make_settings(
        database_url,
        jwt_secret="",
        jwt_algorithm=algorithm,
        jwt_private_key_file=str(private_key),
        jwt_signing_kid="2026-01",
    )
    verifier_settings = make_settings(
        database_url, jwt_secret="", jwt_algorithm=algorithm, jwt_public_keys_dir=str(public_dir)
    )
    assert verifier_settings.token_keys().private_key is None

    async with instance(issuer_settings) as issuer, instance(verifier_settings) as grpc_only:
        username, account_id = await customer_with_account(issuer.bank)
        token = await login(issuer.bank, username)
        assert header_of(token) == {"alg": algorithm, "kid": "2026-01", "typ": "JWT"}

        assert await grpc_only.grpc_balance(token, account_id) == "25.00"
        assert (await grpc_only.rest_balance(token, account_id)).status_code == 200

        # It cannot issue: no private key. A login there is refused before the password is
        # even checked, and no login time is recorded.
        assert not grpc_only.bank.container.tokens.issues
        refused = await grpc_only.bank.client.post(
            "/api/v1/auth/token", data={"username": username, "password": "correct-horse-battery"}
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert "access_token" not in refused.text

        # A token signed with another key pair under the same kid is refused.
        other_key, _ = write_key_pair(tmp_path / "other", "2026-01", kind=kind)
        claims = jwt.decode(token, options={"verify_signature": False})
        impostor = jwt.encode(
            claims, other_key.read_bytes(), algorithm=algorithm, headers={"kid": "2026-01"}
        )
        await assert_refused(grpc_only, impostor, account_id)


async def test_algorithm_confusion_is_refused(database_url: str, tmp_path: Path) -> None:
    """Where EdDSA is configured, the public key (which is public: /.well-known/jwks.json) used
    as an HS256 secret gives nothing; nor does any algorithm but the configured one."""
    private_key, public_key = write_key_pair(tmp_path, "k1")
    settings = make_settings(
        database_url,
        jwt_secret="",
        jwt_algorithm="EdDSA",
        jwt_private_key_file=str(private_key),
        jwt_signing_kid="k1",
    )
    async with instance(settings) as door:
        username, account_id = await customer_with_account(door.bank)
        token = await login(door.bank, username)
        claims = jwt.decode(token, options={"verify_signature": False})
        public_pem = public_key.read_bytes()
        forged = [
            hs256_by_hand(claims, public_pem, "k1"),
            hs256_by_hand(claims, public_pem.strip(), "k1"),
            jwt.encode(claims, SECRET_OLD, algorithm="HS256", headers={"kid": "k1"}),
            jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"}),
        ]
        for bad in forged:
            await assert_refused(door, bad, account_id)
        await assert_accepted(door, token, account_id, "25.00")

    # And the other way round: a shared-secret deployment refuses asymmetric tokens.
    async with instance(hmac_settings(database_url, f"k1:{SECRET_OLD}", "k1")) as door:
        eddsa = jwt.encode(
            claims, private_key.read_bytes(), algorithm="EdDSA", headers={"kid": "k1"}
        )
        await assert_refused(door, eddsa, account_id)


async def test_rotating_an_asymmetric_key_step_by_step(database_url: str, tmp_path: Path) -> None:
    """The same procedure with key pairs: the verifiers get the new public key first, then
    the issuer signs with the new private key, then the old public key is deleted."""
    keys, public_dir = tmp_path / "keys", tmp_path / "public"
    old_private, old_public = write_key_pair(keys, "old")
    new_private, new_public = write_key_pair(keys, "new")
    public_dir.mkdir()
    (public_dir / "old.pem").write_bytes(old_public.read_bytes())

    def issuer(private: Path, kid: str) -> Any:
        return make_settings(
            database_url,
            jwt_secret="",
            jwt_algorithm="EdDSA",
            jwt_private_key_file=str(private),
            jwt_signing_kid=kid,
            jwt_public_keys_dir=str(public_dir),
        )

    def verifier() -> Any:
        return make_settings(
            database_url, jwt_secret="", jwt_algorithm="EdDSA", jwt_public_keys_dir=str(public_dir)
        )

    async with instance(issuer(old_private, "old")) as rest:
        username, account_id = await customer_with_account(rest.bank)
        token_old = await login(rest.bank, username)

    (public_dir / "new.pem").write_bytes(new_public.read_bytes())  # 1. everywhere
    async with instance(issuer(new_private, "new")) as rest, instance(verifier()) as grpc_only:
        token_new = await login(rest.bank, username)  # 2. the issuer switches
        assert header_of(token_new)["kid"] == "new"
        await assert_accepted(grpc_only, token_new, account_id, "25.00")
        await assert_accepted(grpc_only, token_old, account_id, "25.00")
        jwks = (await rest.bank.client.get("/.well-known/jwks.json")).json()
        assert sorted(key["kid"] for key in jwks["keys"]) == ["new", "old"]

    (public_dir / "old.pem").unlink()  # 3. after the token lifetime
    async with instance(issuer(new_private, "new")) as rest, instance(verifier()) as grpc_only:
        await assert_refused(grpc_only, token_old, account_id)
        await assert_refused(rest, token_old, account_id)
        await assert_accepted(grpc_only, token_new, account_id, "25.00")


async def test_jwks_publishes_the_public_keys_other_services_verify_with(
    database_url: str, tmp_path: Path
) -> None:
    private_key, _ = write_key_pair(tmp_path, "k1")
    settings = make_settings(
        database_url,
        jwt_secret="",
        jwt_algorithm="EdDSA",
        jwt_private_key_file=str(private_key),
        jwt_signing_kid="k1",
    )
    async with instance(settings) as door:
        username, _ = await customer_with_account(door.bank)
        token = await login(door.bank, username)
        response = await door.bank.client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    (published,) = response.json()["keys"]
    assert published["kid"] == "k1" and published["alg"] == "EdDSA"
    assert published["use"] == "sig" and published["kty"] == "OKP"
    assert "d" not in published  # the private part never leaves the issuer
    # What another service does: pick the key by kid and verify.
    key = jwt.PyJWK.from_dict(published)
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience="banking-api")
    assert claims["username"] == username

    async with instance(hmac_settings(database_url, f"k1:{SECRET_OLD}", "k1")) as shared:
        empty = await shared.bank.client.get("/.well-known/jwks.json")
    assert empty.status_code == 200
    assert empty.json() == {"keys": []}  # a shared secret is never published
    assert SECRET_OLD not in empty.text


async def test_an_expired_token_signed_with_a_known_kid_is_refused(database_url: str) -> None:
    async with instance(hmac_settings(database_url, f"old:{SECRET_OLD}", "old")) as door:
        username, account_id = await customer_with_account(door.bank)
        claims = jwt.decode(await login(door.bank, username), options={"verify_signature": False})
        past = datetime.now(UTC) - timedelta(hours=1)
        claims |= {"iat": past, "exp": past + timedelta(minutes=5), "jti": str(uuid.uuid4())}
        expired = jwt.encode(claims, SECRET_OLD, algorithm="HS256", headers={"kid": "old"})

        rest = await door.rest_balance(expired, account_id)
        outcome = await door.grpc_balance(expired, account_id)

    assert rest.status_code == 401
    assert rest.json()["error"]["message"] == "token has expired"
    assert isinstance(outcome, BankingClientError)
    assert outcome.status is grpc.StatusCode.UNAUTHENTICATED
    assert outcome.message == "token has expired"
