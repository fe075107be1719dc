"""Settings, read from the environment only (names follow the sketch's compose file).

Unset infrastructure variables mean the embedded default: SQLite file, in-process events,
in-memory cache. ``BANKING_ENV=production`` refuses to start with a missing or default secret.
Token keys (``JWT_*``) are read and checked here, at start-up, so a bad key stops the process
before it serves anything: see ``Settings.token_keys``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that must never reach production: the development fallback and sketch placeholders.
DEVELOPMENT_JWT_SECRET = "development-only-insecure-jwt-secret-change-me"  # noqa: S105
# Command signing (README "Signed commands"): the development fallback key and its key id.
DEVELOPMENT_COMMAND_SIGNING_KEY = "development-only-insecure-command-signing-key"
DEVELOPMENT_COMMAND_SIGNING_KID = "development"
COMMAND_SIGNING_KEY_LENGTH_MIN = 32
_KNOWN_DEFAULT_SECRETS = frozenset(
    {
        DEVELOPMENT_JWT_SECRET,
        DEVELOPMENT_COMMAND_SIGNING_KEY,
        "your-secret-key",
        "secret",
        "changeme",
        "change-me",
        "",
    }
)
JWT_SECRET_LENGTH_MIN = 32
# The key id of the key JWT_SECRET holds (and of the development fallback). Tokens without a
# ``kid`` (issued before key ids existed) are verified with this key only.
JWT_SECRET_KID = "jwt-secret"  # noqa: S105 - a key id, not a secret
HMAC_JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_JWT_ALGORITHMS = ("EdDSA", "RS256")
RSA_KEY_BITS_MIN = 2048
_JWT_ALGORITHMS = {
    name.upper(): name for name in (*HMAC_JWT_ALGORITHMS, *ASYMMETRIC_JWT_ALGORITHMS)
}
_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KID_RULE = "1-64 letters, digits, '.', '_' or '-'"

PrivateSigningKey = Ed25519PrivateKey | Ed448PrivateKey | RSAPrivateKey
PublicVerificationKey = Ed25519PublicKey | Ed448PublicKey | RSAPublicKey


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class InsecureConfiguration(RuntimeError):
    """Raised at start-up when production settings are unsafe."""


class Settings(BaseSettings):
    """All configuration. Every field can be set by the environment variable of the same name."""

    # hide_input_in_errors: a validation error would otherwise print the start of every input
    # value, JWT_SECRET and JWT_KEYS included.
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

    banking_env: Environment = Field(default=Environment.DEVELOPMENT)
    database_url: str = Field(default="")
    data_dir: Path = Field(default=Path("./data"))
    database_pool_size: int = Field(default=20, ge=1, le=500)
    database_pool_overflow: int = Field(default=10, ge=0, le=500)
    database_echo: bool = False

    # Token keys (README "Rotating signing keys"). HS256/384/512: JWT_SECRET (key id
    # "jwt-secret") and/or JWT_KEYS="kid:secret,kid:secret". EdDSA/RS256: JWT_PRIVATE_KEY_FILE
    # on the issuer only, public keys (JWT_PUBLIC_KEYS_DIR of <kid>.pem files and/or
    # JWT_PUBLIC_KEY_FILES="kid:path,...") wherever tokens are verified.
    jwt_secret: SecretStr = Field(default=SecretStr(""))
    jwt_keys: SecretStr = Field(default=SecretStr(""))
    jwt_signing_kid: str = ""
    jwt_algorithm: str = "HS256"
    jwt_private_key_file: str = ""
    jwt_public_keys_dir: str = ""
    jwt_public_key_files: str = ""
    jwt_audience: str = "banking-api"
    jwt_issuer: str = "banking-api"
    jwt_expire_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Commands on banking.transactions.submitted are signed (HMAC-SHA256, events.signing):
    # COMMAND_SIGNING_KEYS="kid:secret,kid:secret" holds this service's key and one per
    # producing service; COMMAND_SIGNING_KID names the one this service signs with.
    command_signing_keys: SecretStr = Field(default=SecretStr(""))
    command_signing_kid: str = ""
    # A token's user is read again from the users table at most this often (per user, per
    # process): a deactivated user is refused, a changed role applies, within this bound.
    token_user_recheck_seconds: float = Field(default=30.0, ge=0, le=3600)
    # argon2id cost (RFC 9106 low-memory profile by default); lower only for tests.
    password_hash_time_cost: int = Field(default=3, ge=1, le=10)
    password_hash_memory_kib: int = Field(default=65536, ge=1024, le=1048576)

    redis_url: str = ""
    # Redis (DESIGN.md section 8): short timeouts, because Redis never decides money.
    redis_socket_timeout_seconds: float = Field(default=0.2, gt=0, le=10)
    redis_retry_seconds: float = Field(default=3.0, gt=0, le=300)
    balance_cache_enabled: bool = True
    balance_cache_ttl_seconds: float = Field(default=5.0, gt=0, le=300)
    rate_limit_enabled: bool = True
    rate_limit_default: str = "100/second"
    rate_limit_token: str = "5/minute"  # noqa: S105 - a rate limit, not a secret
    account_locks: str = Field(default="none", pattern="^(none|memory|redis)$")
    account_lock_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    account_lock_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    kafka_bootstrap_servers: str = ""
    # Transport security to Kafka (docs/transport-security.md): every producer, consumer and
    # admin client gets these through events.security.kafka_security.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = Field(default=SecretStr(""))
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    event_format: Literal["arrow", "json"] = "arrow"
    # Prepended to every topic and consumer group: several environments on one cluster.
    kafka_topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,100}$")
    kafka_topic_partitions: int = Field(default=6, ge=1, le=1000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=10)
    dlq_retries_max: int = Field(default=3, ge=0, le=20)
    dlq_backoff_seconds: float = Field(default=1.0, ge=0.0, le=60.0)
    # Published outbox rows are deleted after this many hours (0: kept for ever), in batches
    # of OUTBOX_RETENTION_BATCH rows, each its own short transaction (the relay never waits).
    outbox_retention_hours: float = Field(default=168.0, ge=0.0, le=24 * 3650)
    outbox_retention_batch: int = Field(default=1000, ge=1, le=100_000)
    # Holds (README "Holds"): the longest a hold may last (also its default expiry), and how
    # often the expiry worker releases the holds that expired.
    hold_duration_max_hours: int = Field(default=168, ge=1, le=24 * 366)
    hold_expiry_seconds: float = Field(default=10.0, gt=0, le=3600)

    # Fraud detection (README "Fraud detection"). A score at or above the alert threshold
    # raises an alert; an asynchronous command at or above the hold threshold waits for review.
    fraud_enabled: bool = True
    # "hold": asynchronous commands at or above the hold threshold wait for review; "alert":
    # they are applied and only alerted on (shadow mode, for a new model or threshold).
    fraud_mode: Literal["hold", "alert"] = "hold"
    fraud_alert_threshold: Decimal = Field(default=Decimal("0.70"), ge=0, le=1, decimal_places=4)
    fraud_hold_threshold: Decimal = Field(default=Decimal("0.90"), ge=0, le=1, decimal_places=4)
    # Versioned model files (`banking fraud train` writes them; workers pick the newest up).
    # Empty: <DATA_DIR>/fraud-models.
    fraud_model_dir: Path | None = None
    fraud_model_reload_seconds: float = Field(default=30.0, ge=0.1, le=3600)

    # Webhooks (README "Notifications and webhooks").
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Attempts per delivery before it is given up; the wait doubles from the base each time.
    webhook_attempts_max: int = Field(default=6, ge=1, le=20)
    webhook_backoff_seconds: float = Field(default=1.0, ge=0.0, le=3600)
    webhook_backoff_seconds_max: float = Field(default=600.0, ge=0.0, le=86400)
    # A webhook whose deliveries are given up this many times in a row is disabled.
    webhook_disable_after_failures: int = Field(default=3, ge=1, le=100)
    webhooks_per_user_max: int = Field(default=20, ge=1, le=1000)
    # Networks a webhook may target although private, loopback or link-local (CIDRs; SSRF).
    webhook_allowed_networks: list[str] = Field(default_factory=list)

    # Audit trail (README "Audit trail"): every published event is recorded once in the
    # append-only audit store by `banking worker audit` (in-process in `banking serve` when no
    # Kafka is configured).
    audit_enabled: bool = True
    # Tamper-evident journal (docs/audit.md): the relay seals transaction_logs rows into the
    # hash chain after commit, at most this many rows per transaction; the audit worker (in
    # `banking serve` when embedded) verifies the chain every JOURNAL_VERIFY_SECONDS (in full
    # at start, then from the last verified row; 0: never).
    journal_seal: bool = True
    journal_seal_batch: int = Field(default=1000, ge=1, le=10_000)
    journal_verify_seconds: float = Field(default=300.0, ge=0.0, le=7 * 86400)

    # Analytics sink (README "Analytics"): a directory or a pyarrow.fs URL (s3://bucket/path)
    # for the partitioned Parquet dataset; empty: no sink. `banking worker analytics` writes it
    # (Kafka only: not run inside `banking serve`, see docs/analytics.md).
    analytics_location: str = ""
    # Rows per Parquet row group (and per file at most), and the longest a received event
    # waits before its rows are flushed.
    analytics_row_group_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    analytics_flush_seconds: float = Field(default=10.0, gt=0, le=3600)

    # Read replicas (README "Read replicas"): reads that may be slightly behind go to a
    # replica whose replay lag is under REPLICA_LAG_MAX_SECONDS (checked every
    # REPLICA_CHECK_SECONDS); a caller's reads within REPLICA_STICKY_SECONDS of their own
    # write, and everything that decides money, stay on the primary.
    database_replica_urls: list[str] = Field(default_factory=list)
    replica_lag_max_seconds: float = Field(default=1.0, gt=0, le=3600)
    replica_check_seconds: float = Field(default=0.5, gt=0, le=60)
    replica_sticky_seconds: float = Field(default=5.0, gt=0, le=3600)

    # Group commit (README "Group commit and batches"): concurrent movements of one process
    # arriving within GROUP_COMMIT_WINDOW_SECONDS of the first, at most GROUP_COMMIT_ITEMS_MAX,
    # are decided in one transaction and one commit, each with its own outcome.
    group_commit: bool = False
    group_commit_window_seconds: float = Field(default=0.001, gt=0, le=0.05)
    group_commit_items_max: int = Field(default=64, ge=2, le=1000)
    # Groups of one process deciding at once; what arrives meanwhile forms the next group.
    group_commit_in_flight_max: int = Field(default=1, ge=1, le=64)
    # POST /api/v1/transactions/batch and gRPC BatchMovements: items per batch, and the
    # request body limit of that route (the other routes keep REQUEST_BODY_BYTES_MAX).
    batch_items_max: int = Field(default=1000, ge=1, le=1000)
    batch_body_bytes_max: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)

    cors_allow_origins: list[str] = Field(default_factory=list)
    trusted_hosts: list[str] = Field(default_factory=lambda: ["*"])
    # Load balancers whose X-Forwarded-For / X-Forwarded-Proto are believed (JSON list of
    # CIDRs, e.g. ["10.0.0.0/8"]): only a request whose direct peer is in one of them takes its
    # client address (the per-IP rate limit's key) and scheme from those headers, and then the
    # right-most address that is not a trusted proxy. Empty: never (the direct peer counts).
    trusted_proxies: list[str] = Field(default_factory=list)
    # This instance's name in the X-Served-By response header (empty: no header), so that a
    # client behind a load balancer sees which instance answered.
    instance_name: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,64}$")
    request_body_bytes_max: int = Field(default=64 * 1024, ge=1024)
    page_size_default: int = Field(default=50, ge=1)
    # An Idempotency-Key of account or user creation is remembered this long; after it, the
    # key may be used again (banking.ledger.creation_keys).
    idempotency_key_retention_hours: float = Field(default=24.0, gt=0.0, le=24 * 3650)
    page_size_max: int = Field(default=500, ge=1)
    # Most completed legs one statement lists (GET /accounts/{id}/statement); a period with
    # more answers 422 (ask for a shorter period).
    statement_legs_max: int = Field(default=100_000, ge=1)
    transaction_retries_max: int = Field(default=5, ge=0, le=20)

    # OpenTelemetry tracing (off when empty): OTLP/HTTP collector, e.g. http://otel:4318
    otel_exporter_otlp_endpoint: str = ""
    otel_service_name: str = "banking-api"
    log_level: str = "INFO"
    log_json: bool = True
    metrics_enabled: bool = True

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 50051

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        self.token_keys()  # refuses missing, default, short or unreadable keys
        self.command_keys()  # the same for the command signing keys
        if self.banking_env is Environment.PRODUCTION and not self.database_url:
            raise InsecureConfiguration("DATABASE_URL must be set in production")
        return self

    @model_validator(mode="after")
    def _fraud_thresholds_are_ordered(self) -> Settings:
        if self.fraud_alert_threshold > self.fraud_hold_threshold:
            raise ValueError("FRAUD_ALERT_THRESHOLD must not be above FRAUD_HOLD_THRESHOLD")

        for network in self.webhook_allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as error:
                raise ValueError(
                    f"WEBHOOK_ALLOWED_NETWORKS: {network!r} is not a network like 127.0.0.1/32"
                ) from error
        return self

    @model_validator(mode="after")
    def _replicas_keep_read_your_write(self) -> Settings:
        # A caller's reads stay on the primary for the sticky window after their write; a
        # replica serves reads only while its lag (checked every REPLICA_CHECK_SECONDS) is under
        # the bound, so the window must outlast both for a read never to miss one's own write.
        if self.replica_sticky_seconds <= self.replica_lag_max_seconds + self.replica_check_seconds:
            raise ValueError(
                "REPLICA_STICKY_SECONDS must be above REPLICA_LAG_MAX_SECONDS + "
                "REPLICA_CHECK_SECONDS (read-your-write)"
            )
        for url in self.database_replica_urls:
            if not url.startswith(("postgresql", "postgres")):
                raise ValueError("DATABASE_REPLICA_URLS: replicas are PostgreSQL URLs")
        return self

    @model_validator(mode="after")
    def _trusted_proxies_are_networks(self) -> Settings:
        self.trusted_proxy_networks()
        return self

    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """TRUSTED_PROXIES as networks; ``ValueError`` naming the entry that is not one."""
        networks = []
        for network in self.trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(network.strip(), strict=False))
            except ValueError as error:
                raise ValueError(
                    f"TRUSTED_PROXIES: {network!r} is not a network like 10.0.0.0/8"
                ) from error
        return tuple(networks)

    @property
    def effective_fraud_model_dir(self) -> Path:
        return self.fraud_model_dir or self.data_dir / "fraud-models"

    @model_validator(mode="after")
    def _kafka_security_is_consistent(self) -> Settings:
        sasl = self.kafka_security_protocol == "SASL_SSL"
        has_credentials = bool(
            self.kafka_sasl_username or self.kafka_sasl_password.get_secret_value()
        )
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(
                "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if has_credentials and not sasl:
            # A SASL password is never sent over a connection that would not use it.
            raise ValueError(
                "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD are set but "
                f"KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}, not SASL_SSL"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        if self.kafka_security_protocol == "PLAINTEXT" and (
            self.kafka_ssl_cafile or self.kafka_ssl_certfile
        ):
            raise ValueError("KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT")
        return self

    @model_validator(mode="after")
    def _redis_settings_are_usable(self) -> Settings:
        from limits import parse

        for name in ("rate_limit_default", "rate_limit_token"):
            try:
                parse(getattr(self, name))
            except ValueError as error:
                raise ValueError(f"{name.upper()} is not a rate limit like '100/second'") from error
        if self.account_locks == "redis" and not self.redis_url:
            raise ValueError("ACCOUNT_LOCKS=redis needs REDIS_URL")
        return self

    @property
    def is_production(self) -> bool:
        return self.banking_env is Environment.PRODUCTION

    @cached_property
    def effective_database_url(self) -> str:
        """The configured database, or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'banking.db').as_posix()}"

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_bootstrap_servers)

    @property
    def is_embedded_database(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def jwt_signing_secret(self) -> str:
        """The secret of the key JWT_SECRET holds (key id ``jwt-secret``), or the development
        fallback."""
        secret = self.jwt_secret.get_secret_value()
        return secret or DEVELOPMENT_JWT_SECRET

    def token_keys(self) -> TokenKeys:
        """The token keys the environment names, read and checked. Raises
        ``InsecureConfiguration`` naming the variable at fault (never a secret's value)."""
        algorithm = _JWT_ALGORITHMS.get(self.jwt_algorithm.upper())
        if algorithm is None:
            raise InsecureConfiguration(
                "JWT_ALGORITHM must be one of "
                f"{', '.join((*HMAC_JWT_ALGORITHMS, *ASYMMETRIC_JWT_ALGORITHMS))} "
                "('none' is never accepted)"
            )
        if algorithm in HMAC_JWT_ALGORITHMS:
            return _hmac_keys(self, algorithm)
        return _asymmetric_keys(self, algorithm)

    def command_keys(self) -> CommandSigningKeys:
        """The command signing keyring, read and checked. Raises ``InsecureConfiguration``
        naming the variable at fault (never a secret's value)."""
        return _command_keys(self)


@dataclass(frozen=True)
class CommandSigningKeys:
    """The keys commands are signed and verified with (``events.signing.CommandKeyring``):
    this service's own (``signing_kid``) and those of the services that send commands."""

    signing_kid: str
    secrets: Mapping[str, str] = field(repr=False)


def _command_keys(settings: Settings) -> CommandSigningKeys:
    secrets: dict[str, str] = {}
    _read_keyring("COMMAND_SIGNING_KEYS", settings.command_signing_keys, secrets)
    kid = settings.command_signing_kid
    if settings.is_production:
        if not secrets or not kid:
            raise InsecureConfiguration(
                "COMMAND_SIGNING_KEYS and COMMAND_SIGNING_KID must be set in production "
                f"(random keys of at least {COMMAND_SIGNING_KEY_LENGTH_MIN} characters)"
            )
        for name, secret in secrets.items():
            if secret in _KNOWN_DEFAULT_SECRETS or len(secret) < COMMAND_SIGNING_KEY_LENGTH_MIN:
                raise InsecureConfiguration(
                    f"the COMMAND_SIGNING_KEYS key '{name}' must be a random value of at least "
                    f"{COMMAND_SIGNING_KEY_LENGTH_MIN} characters in production"
                )
    if not secrets:
        secrets[DEVELOPMENT_COMMAND_SIGNING_KID] = DEVELOPMENT_COMMAND_SIGNING_KEY
    if not kid:
        if len(secrets) != 1:
            raise InsecureConfiguration(
                "COMMAND_SIGNING_KID must name the key this service signs commands with, "
                f"one of: {', '.join(secrets)}"
            )
        kid = next(iter(secrets))
    if kid not in secrets:
        raise InsecureConfiguration(
            f"COMMAND_SIGNING_KID names none of the configured keys ({', '.join(secrets)})"
        )
    return CommandSigningKeys(signing_kid=kid, secrets=secrets)


@dataclass(frozen=True)
class TokenKeys:
    """The keys tokens are signed and verified with (``banking.auth.keys.KeyRing`` is built
    from them). The secrets and the private key are left out of its ``repr``."""

    algorithm: str
    # The key id new tokens are signed with; None on a process that only verifies.
    signing_kid: str | None
    hmac_secrets: Mapping[str, str] = field(repr=False)
    private_key: PrivateSigningKey | None = field(repr=False)
    # Every key id a token may name, with its public key (the issuer's own included).
    public_keys: Mapping[str, PublicVerificationKey]
    # The key id a token without ``kid`` is verified with (JWT_SECRET's), if any.
    kidless_kid: str | None


def _entries(text: str) -> list[str]:
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def _read_keyring(
    variable: str,
    value: SecretStr,
    secrets: dict[str, str],
    *,
    known: Mapping[str, str] | None = None,
) -> None:
    """Add the ``kid:secret,kid:secret`` entries of ``variable`` to ``secrets``. Neither an
    entry nor its kid is echoed when it is malformed: it may be a bare secret. ``known`` names
    key ids that mean something already (said when one is given twice)."""
    for position, entry in enumerate(_entries(value.get_secret_value()), start=1):
        kid, separator, secret = (part.strip() for part in entry.partition(":"))
        if not separator or not secret or not _KID.fullmatch(kid):
            raise InsecureConfiguration(
                f"{variable} entry {position} is not kid:secret (a kid is {_KID_RULE})"
            )
        if kid in secrets:
            meaning = (known or {}).get(kid)
            also = f" ({meaning})" if meaning else ""
            raise InsecureConfiguration(f"{variable} names the key id '{kid}'{also} twice")
        secrets[kid] = secret


def _hmac_keys(settings: Settings, algorithm: str) -> TokenKeys:
    for name in ("jwt_private_key_file", "jwt_public_keys_dir", "jwt_public_key_files"):
        if getattr(settings, name):
            raise InsecureConfiguration(
                f"{name.upper()} needs JWT_ALGORITHM={' or '.join(ASYMMETRIC_JWT_ALGORITHMS)}; "
                f"{algorithm} tokens are signed with JWT_SECRET or JWT_KEYS"
            )
    secrets: dict[str, str] = {}
    kidless_kid = None
    legacy = settings.jwt_secret.get_secret_value()
    if legacy:
        secrets[JWT_SECRET_KID] = legacy
        kidless_kid = JWT_SECRET_KID
    _read_keyring(
        "JWT_KEYS", settings.jwt_keys, secrets, known={JWT_SECRET_KID: "the key of JWT_SECRET"}
    )
    if not secrets:
        if settings.is_production:
            raise InsecureConfiguration(
                f"JWT_SECRET or JWT_KEYS must be set to random values of at least "
                f"{JWT_SECRET_LENGTH_MIN} characters in production"
            )
        secrets[JWT_SECRET_KID] = DEVELOPMENT_JWT_SECRET
        kidless_kid = JWT_SECRET_KID
    if settings.is_production:
        for kid, secret in secrets.items():
            if secret in _KNOWN_DEFAULT_SECRETS or len(secret) < JWT_SECRET_LENGTH_MIN:
                name = "JWT_SECRET" if kid == kidless_kid else f"the JWT_KEYS key '{kid}'"
                raise InsecureConfiguration(
                    f"{name} must be set to a random value of at least "
                    f"{JWT_SECRET_LENGTH_MIN} characters in production"
                )
    return TokenKeys(
        algorithm=algorithm,
        signing_kid=_hmac_signing_kid(settings, list(secrets)),
        hmac_secrets=secrets,
        private_key=None,
        public_keys={},
        kidless_kid=kidless_kid,
    )


def _hmac_signing_kid(settings: Settings, kids: list[str]) -> str:
    if settings.jwt_signing_kid:
        if settings.jwt_signing_kid not in kids:
            raise InsecureConfiguration(
                f"JWT_SIGNING_KID names none of the configured keys ({', '.join(kids)})"
            )
        return settings.jwt_signing_kid
    if len(kids) == 1:
        return kids[0]
    raise InsecureConfiguration(
        f"JWT_SIGNING_KID must name the key that signs new tokens, one of: {', '.join(kids)}"
    )


def _asymmetric_keys(settings: Settings, algorithm: str) -> TokenKeys:
    if settings.jwt_secret.get_secret_value() or settings.jwt_keys.get_secret_value():
        raise InsecureConfiguration(
            f"JWT_SECRET and JWT_KEYS are for {'/'.join(HMAC_JWT_ALGORITHMS)}: with "
            f"JWT_ALGORITHM={algorithm} tokens are signed with JWT_PRIVATE_KEY_FILE and verified "
            "with JWT_PUBLIC_KEYS_DIR or JWT_PUBLIC_KEY_FILES; unset them"
        )
    public_keys: dict[str, PublicVerificationKey] = {}
    if settings.jwt_public_keys_dir:
        directory = Path(settings.jwt_public_keys_dir)
        if not directory.is_dir():
            raise InsecureConfiguration(f"JWT_PUBLIC_KEYS_DIR is not a directory: {directory}")
        for path in sorted(directory.glob("*.pem")):
            if not _KID.fullmatch(path.stem):
                raise InsecureConfiguration(
                    f"JWT_PUBLIC_KEYS_DIR: {path.name} is not <kid>.pem (a kid is {_KID_RULE})"
                )
            public_keys[path.stem] = _public_key(
                f"JWT_PUBLIC_KEYS_DIR file {path.name}", path, algorithm
            )
    for position, entry in enumerate(_entries(settings.jwt_public_key_files), start=1):
        kid, separator, file = (part.strip() for part in entry.partition(":"))
        if not separator or not file or not _KID.fullmatch(kid):
            raise InsecureConfiguration(
                f"JWT_PUBLIC_KEY_FILES entry {position} is not kid:path (a kid is {_KID_RULE})"
            )
        if kid in public_keys:
            raise InsecureConfiguration(f"the public key id '{kid}' is configured twice")
        public_keys[kid] = _public_key(f"JWT_PUBLIC_KEY_FILES key '{kid}'", Path(file), algorithm)
    private_key = None
    signing_kid = None
    if settings.jwt_private_key_file:
        private_key = _private_key(Path(settings.jwt_private_key_file), algorithm)
        signing_kid = settings.jwt_signing_kid
        if not _KID.fullmatch(signing_kid):
            raise InsecureConfiguration(
                f"JWT_SIGNING_KID must name the key of JWT_PRIVATE_KEY_FILE ({_KID_RULE})"
            )
        own = private_key.public_key()
        listed = public_keys.setdefault(signing_kid, own)
        if _public_bytes(listed) != _public_bytes(own):
            raise InsecureConfiguration(
                f"the public key '{signing_kid}' is not the public half of JWT_PRIVATE_KEY_FILE"
            )
    if not public_keys:
        raise InsecureConfiguration(
            f"JWT_ALGORITHM={algorithm} needs JWT_PRIVATE_KEY_FILE (on the token issuer) or "
            "JWT_PUBLIC_KEYS_DIR / JWT_PUBLIC_KEY_FILES (to verify tokens)"
        )
    return TokenKeys(
        algorithm=algorithm,
        signing_kid=signing_kid,
        hmac_secrets={},
        private_key=private_key,
        public_keys=public_keys,
        kidless_kid=None,
    )


def _read(what: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InsecureConfiguration(
            f"{what} cannot be read: {path} ({error.strerror or 'not readable'})"
        ) from None


def _public_key(what: str, path: Path, algorithm: str) -> PublicVerificationKey:
    try:
        key = serialization.load_pem_public_key(_read(what, path))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InsecureConfiguration(f"{what} is not a PEM public key: {path}") from None
    if not isinstance(key, Ed25519PublicKey | Ed448PublicKey | RSAPublicKey):
        raise InsecureConfiguration(f"{what} is not an Ed25519, Ed448 or RSA key")
    _require_kind(what, key, algorithm)
    return key


def _private_key(path: Path, algorithm: str) -> PrivateSigningKey:
    what = "JWT_PRIVATE_KEY_FILE"
    try:
        key = serialization.load_pem_private_key(_read(what, path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The parser's message is not repeated: it could quote the file.
        raise InsecureConfiguration(
            f"{what} is not an unencrypted PEM private key: {path}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey | Ed448PrivateKey | RSAPrivateKey):
        raise InsecureConfiguration(f"{what} is not an Ed25519, Ed448 or RSA key")
    _require_kind(what, key, algorithm)
    return key


def _require_kind(
    what: str, key: PrivateSigningKey | PublicVerificationKey, algorithm: str
) -> None:
    """Refuse a key of another kind than ``algorithm`` signs with, or a weak one."""
    if algorithm == "EdDSA":
        if isinstance(key, RSAPrivateKey | RSAPublicKey):
            raise InsecureConfiguration(
                f"{what} is not an Ed25519 or Ed448 key (JWT_ALGORITHM=EdDSA)"
            )
        return
    if not isinstance(key, RSAPrivateKey | RSAPublicKey):
        raise InsecureConfiguration(f"{what} is not an RSA key (JWT_ALGORITHM={algorithm})")
    if key.key_size < RSA_KEY_BITS_MIN:
        raise InsecureConfiguration(
            f"{what} is an RSA key of {key.key_size} bits; at least {RSA_KEY_BITS_MIN} are needed"
        )


def _public_bytes(key: PublicVerificationKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite://`` URLs and pick the async drivers."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def load_settings() -> Settings:
    """Read settings from the environment (called once, in the composition root)."""
    return Settings()
