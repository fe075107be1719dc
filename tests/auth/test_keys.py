"""Token keys from the environment: JWT_KEYS / JWT_SIGNING_KID, JWT_SECRET as the key
"jwt-secret", EdDSA and RS256 key files. A bad key stops the process at start-up with a
message naming the variable, never a secret; nothing prints a secret or a private key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from banking.auth.keys import KeyRing
from banking.config import DEVELOPMENT_JWT_SECRET, JWT_SECRET_KID, InsecureConfiguration, Settings
from tests.auth.conftest import SECRET_NEW, SECRET_OLD, write_key_pair

PRODUCTION = {
    "banking_env": "production",
    "database_url": "postgresql://db.internal/banking",
    # production also needs command signing keys (events.signing), not what these tests are about
    "command_signing_keys": f"bank:{'c' * 40}",
    "command_signing_kid": "bank",
}


def settings(**values: Any) -> Settings:
    return Settings(**{"jwt_secret": "", **values})


def test_the_environment_variables_name_the_key_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_KEYS", f" old:{SECRET_OLD} , new:{SECRET_NEW} ,")
    monkeypatch.setenv("JWT_SIGNING_KID", "new")
    monkeypatch.setenv("TOKEN_USER_RECHECK_SECONDS", "12.5")
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name.upper(), value)

    loaded = Settings()
    keys = loaded.token_keys()

    assert keys.algorithm == "HS256"
    assert keys.signing_kid == "new"
    assert dict(keys.hmac_secrets) == {"old": SECRET_OLD, "new": SECRET_NEW}
    assert keys.kidless_kid is None  # no JWT_SECRET: a token without kid has no key
    assert loaded.token_user_recheck_seconds == 12.5
    ring = KeyRing.of(keys)
    assert ring.kids == ("old", "new")
    assert ring.verification_key(None) is None


def test_jwt_secret_alone_is_the_key_jwt_secret_and_verifies_tokens_without_kid() -> None:
    keys = settings(jwt_secret=SECRET_OLD, **PRODUCTION).token_keys()
    ring = KeyRing.of(keys)
    assert ring.signing_kid == JWT_SECRET_KID
    assert ring.verification_key(None) == SECRET_OLD
    assert ring.verification_key(JWT_SECRET_KID) == SECRET_OLD


def test_development_without_keys_uses_the_development_secret_only_there() -> None:
    keys = settings().token_keys()
    assert dict(keys.hmac_secrets) == {JWT_SECRET_KID: DEVELOPMENT_JWT_SECRET}
    with pytest.raises(InsecureConfiguration, match="JWT_SECRET or JWT_KEYS must be set"):
        settings(**PRODUCTION)


def test_the_algorithm_is_matched_without_regard_to_case() -> None:
    assert settings(jwt_algorithm="hs512").token_keys().algorithm == "HS512"


# --- refused at start-up ----------------------------------------------------------------------


def ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def rsa_pem(bits: int) -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def file_with(tmp: Path, name: str, content: bytes) -> str:
    path = tmp / name
    path.write_bytes(content)
    return str(path)


def public_dir_with(tmp: Path, name: str, content: bytes) -> str:
    directory = tmp / "public"
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(content)
    return str(directory)


def eddsa(**values: Any) -> dict[str, Any]:
    return {"jwt_algorithm": "EdDSA", **values}


def encrypted_ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a-passphrase"),
    )


Case = Callable[[Path], dict[str, Any]]
REFUSED: dict[str, tuple[Case, str]] = {
    "nothing": (lambda tmp: {}, "JWT_SECRET or JWT_KEYS must be set"),
    "placeholder-secret": (
        lambda tmp: {"jwt_secret": "your-secret-key"},
        "JWT_SECRET must be set to a random value of at least 32",
    ),
    "short-secret": (lambda tmp: {"jwt_secret": "x" * 31}, "JWT_SECRET must be set"),
    "short-key-in-ring": (
        lambda tmp: {"jwt_keys": f"old:{SECRET_OLD},new:short", "jwt_signing_kid": "old"},
        "the JWT_KEYS key 'new' must be set to a random value",
    ),
    "development-secret-in-ring": (
        lambda tmp: {"jwt_keys": f"a:{DEVELOPMENT_JWT_SECRET}"},
        "the JWT_KEYS key 'a' must be set",
    ),
    "default-secret-next-to-a-good-ring": (
        lambda tmp: {"jwt_secret": "changeme", "jwt_keys": f"b:{SECRET_NEW}"},
        "JWT_SECRET must be set",
    ),
    "entry-without-kid": (
        lambda tmp: {"jwt_keys": SECRET_OLD},
        "JWT_KEYS entry 1 is not kid:secret",
    ),
    "entry-with-a-bad-kid": (
        lambda tmp: {"jwt_keys": f"old:{SECRET_OLD},bad kid!:{SECRET_NEW}"},
        "JWT_KEYS entry 2 is not kid:secret",
    ),
    "entry-without-secret": (lambda tmp: {"jwt_keys": "old:"}, "JWT_KEYS entry 1"),
    "kid-twice": (
        lambda tmp: {"jwt_keys": f"a:{SECRET_OLD},a:{SECRET_NEW}", "jwt_signing_kid": "a"},
        "names the key id 'a' twice",
    ),
    "kid-of-jwt-secret-twice": (
        lambda tmp: {"jwt_secret": SECRET_OLD, "jwt_keys": f"jwt-secret:{SECRET_NEW}"},
        "(the key of JWT_SECRET) twice",
    ),
    "several-keys-no-signing-kid": (
        lambda tmp: {"jwt_keys": f"a:{SECRET_OLD},b:{SECRET_NEW}"},
        "JWT_SIGNING_KID must name the key that signs new tokens, one of: a, b",
    ),
    "signing-kid-not-in-ring": (
        lambda tmp: {"jwt_keys": f"a:{SECRET_OLD}", "jwt_signing_kid": "b"},
        "JWT_SIGNING_KID names none of the configured keys (a)",
    ),
    "algorithm-none": (
        lambda tmp: {"jwt_secret": SECRET_OLD, "jwt_algorithm": "none"},
        "JWT_ALGORITHM must be one of HS256, HS384, HS512, EdDSA, RS256",
    ),
    "algorithm-unknown": (
        lambda tmp: {"jwt_secret": SECRET_OLD, "jwt_algorithm": "ES256"},
        "JWT_ALGORITHM must be one of",
    ),
    "key-file-with-a-shared-secret": (
        lambda tmp: {
            "jwt_secret": SECRET_OLD,
            "jwt_private_key_file": file_with(tmp, "k.key", ed25519_pem()),
        },
        "JWT_PRIVATE_KEY_FILE needs JWT_ALGORITHM=EdDSA or RS256",
    ),
    "shared-secret-with-eddsa": (
        lambda tmp: eddsa(
            jwt_secret=SECRET_OLD,
            jwt_private_key_file=file_with(tmp, "k.key", ed25519_pem()),
            jwt_signing_kid="k",
        ),
        "JWT_SECRET and JWT_KEYS are for HS256/HS384/HS512",
    ),
    "eddsa-without-keys": (lambda tmp: eddsa(), "JWT_ALGORITHM=EdDSA needs JWT_PRIVATE_KEY_FILE"),
    "private-key-missing": (
        lambda tmp: eddsa(jwt_private_key_file=str(tmp / "absent.key"), jwt_signing_kid="k"),
        "JWT_PRIVATE_KEY_FILE cannot be read",
    ),
    "private-key-is-a-directory": (
        lambda tmp: eddsa(jwt_private_key_file=str(tmp), jwt_signing_kid="k"),
        "JWT_PRIVATE_KEY_FILE cannot be read",
    ),
    "private-key-not-pem": (
        lambda tmp: eddsa(
            jwt_private_key_file=file_with(tmp, "k.key", b"garbage"), jwt_signing_kid="k"
        ),
        "JWT_PRIVATE_KEY_FILE is not an unencrypted PEM private key",
    ),
    "private-key-encrypted": (
        lambda tmp: eddsa(
            jwt_private_key_file=file_with(tmp, "k.key", encrypted_ed25519_pem()),
            jwt_signing_kid="k",
        ),
        "JWT_PRIVATE_KEY_FILE is not an unencrypted PEM private key",
    ),
    "rsa-key-for-eddsa": (
        lambda tmp: eddsa(
            jwt_private_key_file=file_with(tmp, "k.key", rsa_pem(2048)), jwt_signing_kid="k"
        ),
        "JWT_PRIVATE_KEY_FILE is not an Ed25519 or Ed448 key",
    ),
    "ed25519-key-for-rs256": (
        lambda tmp: {
            "jwt_algorithm": "RS256",
            "jwt_private_key_file": file_with(tmp, "k.key", ed25519_pem()),
            "jwt_signing_kid": "k",
        },
        "JWT_PRIVATE_KEY_FILE is not an RSA key (JWT_ALGORITHM=RS256)",
    ),
    "weak-rsa-key": (
        lambda tmp: {
            "jwt_algorithm": "RS256",
            "jwt_private_key_file": file_with(tmp, "k.key", rsa_pem(1024)),
            "jwt_signing_kid": "k",
        },
        "is an RSA key of 1024 bits; at least 2048",
    ),
    "private-key-without-signing-kid": (
        lambda tmp: eddsa(jwt_private_key_file=file_with(tmp, "k.key", ed25519_pem())),
        "JWT_SIGNING_KID must name the key of JWT_PRIVATE_KEY_FILE",
    ),
    "public-dir-missing": (
        lambda tmp: eddsa(jwt_public_keys_dir=str(tmp / "absent")),
        "JWT_PUBLIC_KEYS_DIR is not a directory",
    ),
    "public-file-name-not-a-kid": (
        lambda tmp: eddsa(jwt_public_keys_dir=public_dir_with(tmp, "a b.pem", b"x")),
        "a b.pem is not <kid>.pem",
    ),
    "private-key-among-the-public-keys": (
        lambda tmp: eddsa(jwt_public_keys_dir=public_dir_with(tmp, "k.pem", ed25519_pem())),
        "JWT_PUBLIC_KEYS_DIR file k.pem is not a PEM public key",
    ),
    "public-key-files-entry-malformed": (
        lambda tmp: eddsa(jwt_public_key_files="just-a-path.pem"),
        "JWT_PUBLIC_KEY_FILES entry 1 is not kid:path",
    ),
    "public-key-file-missing": (
        lambda tmp: eddsa(jwt_public_key_files=f"k:{tmp / 'absent.pem'}"),
        "JWT_PUBLIC_KEY_FILES key 'k' cannot be read",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_key_configuration_is_refused_in_production_naming_no_secret(
    tmp_path: Path, case: str
) -> None:
    make, expected = REFUSED[case]
    values = make(tmp_path)
    with pytest.raises(InsecureConfiguration) as refused:
        settings(**PRODUCTION, **values)
    message = str(refused.value)
    assert expected in message, message
    for secret in (SECRET_OLD, SECRET_NEW, DEVELOPMENT_JWT_SECRET, "your-secret-key", "x" * 31):
        assert secret not in message
    assert "PRIVATE KEY" not in message


def test_unreadable_keys_are_refused_in_development_too(tmp_path: Path) -> None:
    with pytest.raises(InsecureConfiguration, match="cannot be read"):
        settings(
            jwt_algorithm="EdDSA",
            jwt_private_key_file=str(tmp_path / "absent.key"),
            jwt_signing_kid="k",
        )


def test_duplicate_and_mismatched_public_keys_are_refused(tmp_path: Path) -> None:
    private, public = write_key_pair(tmp_path / "a", "k")
    _, other_public = write_key_pair(tmp_path / "b", "k")
    with pytest.raises(InsecureConfiguration, match="'k' is configured twice"):
        settings(
            jwt_algorithm="EdDSA",
            jwt_public_keys_dir=str(tmp_path / "a"),
            jwt_public_key_files=f"k:{other_public}",
        )
    with pytest.raises(InsecureConfiguration, match="not the public half of JWT_PRIVATE_KEY_FILE"):
        settings(
            jwt_algorithm="EdDSA",
            jwt_private_key_file=str(private),
            jwt_signing_kid="k",
            jwt_public_key_files=f"k:{other_public}",
        )
    # Its own public half listed as well is fine.
    keys = settings(
        jwt_algorithm="EdDSA",
        jwt_private_key_file=str(private),
        jwt_signing_kid="k",
        jwt_public_key_files=f"k:{public}",
    ).token_keys()
    assert list(keys.public_keys) == ["k"]


# --- nothing prints a secret -------------------------------------------------------------------


def test_no_repr_and_no_configuration_error_shows_a_secret(tmp_path: Path) -> None:
    hmac = settings(jwt_keys=f"old:{SECRET_OLD},new:{SECRET_NEW}", jwt_signing_kid="new")
    private, _ = write_key_pair(tmp_path, "k")
    eddsa_settings = settings(
        jwt_algorithm="EdDSA", jwt_private_key_file=str(private), jwt_signing_kid="k"
    )
    shown = " ".join(
        [
            repr(hmac),
            str(hmac),
            hmac.model_dump_json(),
            repr(hmac.token_keys()),
            repr(KeyRing.of(hmac.token_keys())),
            repr(eddsa_settings.token_keys()),
            repr(KeyRing.of(eddsa_settings.token_keys())),
        ]
    )
    assert SECRET_OLD not in shown and SECRET_NEW not in shown
    assert "PRIVATE" not in shown
    assert "signing_kid='new'" in repr(KeyRing.of(hmac.token_keys()))

    # A configuration error elsewhere does not quote the inputs (pydantic would by default).
    with pytest.raises(ValueError, match="RATE_LIMIT_DEFAULT") as invalid:
        settings(
            jwt_secret=SECRET_OLD,
            jwt_keys=f"x:{SECRET_NEW}",
            jwt_signing_kid="x",
            rate_limit_default="bogus",
        )
    assert SECRET_OLD[:8] not in str(invalid.value)
    assert SECRET_NEW[:8] not in str(invalid.value)
    with pytest.raises(ValueError) as out_of_range:
        settings(jwt_keys=f"x:{SECRET_NEW}", token_user_recheck_seconds=-1)
    assert SECRET_NEW[:8] not in str(out_of_range.value)


def test_the_command_line_refuses_to_start_on_a_weak_key_without_printing_it(
    tmp_path: Path,
) -> None:
    weak = "weak-but-unique-0123"
    env = {
        "PATH": "/usr/bin:/bin",
        "BANKING_ENV": "production",
        "DATABASE_URL": f"sqlite:///{tmp_path}/p.db",
        "DATA_DIR": str(tmp_path),
        "JWT_KEYS": f"old:{SECRET_OLD},new:{weak}",
        "JWT_SIGNING_KID": "new",
    }
    result = subprocess.run(
        [sys.executable, "-m", "banking.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to start: the JWT_KEYS key 'new' must be set to a random value" in (
        result.stderr
    )
    assert weak not in result.stdout + result.stderr
    assert SECRET_OLD not in result.stdout + result.stderr
    assert not (tmp_path / "p.db").exists()  # nothing was migrated


def test_a_token_is_signed_with_the_signing_kid_and_verifies_with_its_key() -> None:
    ring = KeyRing.of(
        settings(jwt_keys=f"old:{SECRET_OLD},new:{SECRET_NEW}", jwt_signing_kid="new").token_keys()
    )
    kid, key = ring.signing_key()
    token = jwt.encode({"sub": "x"}, key, algorithm=ring.algorithm, headers={"kid": kid})
    assert jwt.get_unverified_header(token)["kid"] == "new"
    assert jwt.decode(token, ring.verification_key("new"), algorithms=["HS256"]) == {"sub": "x"}
    assert ring.verification_key("old") == SECRET_OLD
    assert ring.verification_key("gone") is None
