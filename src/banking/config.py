"""Settings, read from the environment only (names follow the sketch's compose file).

Unset infrastructure variables mean the embedded default: SQLite file, in-process events,
in-memory cache. ``BANKING_ENV=production`` refuses to start with a missing or default secret.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that must never reach production: the development fallback and sketch placeholders.
DEVELOPMENT_JWT_SECRET = "development-only-insecure-jwt-secret-change-me"  # noqa: S105
_KNOWN_DEFAULT_SECRETS = frozenset(
    {DEVELOPMENT_JWT_SECRET, "your-secret-key", "secret", "changeme", "change-me", ""}
)
JWT_SECRET_LENGTH_MIN = 32


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class InsecureConfiguration(RuntimeError):
    """Raised at start-up when production settings are unsafe."""


class Settings(BaseSettings):
    """All configuration. Every field can be set by the environment variable of the same name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    banking_env: Environment = Field(default=Environment.DEVELOPMENT)
    database_url: str = Field(default="")
    data_dir: Path = Field(default=Path("./data"))
    database_pool_size: int = Field(default=20, ge=1, le=500)
    database_pool_overflow: int = Field(default=10, ge=0, le=500)
    database_echo: bool = False

    jwt_secret: SecretStr = Field(default=SecretStr(""))
    jwt_algorithm: str = "HS256"
    jwt_audience: str = "banking-api"
    jwt_issuer: str = "banking-api"
    jwt_expire_minutes: int = Field(default=30, ge=1, le=24 * 60)
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
    event_format: Literal["arrow", "json"] = "arrow"
    # Prepended to every topic and consumer group: several environments on one cluster.
    kafka_topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,100}$")
    kafka_topic_partitions: int = Field(default=6, ge=1, le=1000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=10)
    dlq_retries_max: int = Field(default=3, ge=0, le=20)
    dlq_backoff_seconds: float = Field(default=1.0, ge=0.0, le=60.0)

    cors_allow_origins: list[str] = Field(default_factory=list)
    trusted_hosts: list[str] = Field(default_factory=lambda: ["*"])
    request_body_bytes_max: int = Field(default=64 * 1024, ge=1024)
    page_size_default: int = Field(default=50, ge=1)
    page_size_max: int = Field(default=500, ge=1)
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
        if self.banking_env is Environment.PRODUCTION:
            secret = self.jwt_secret.get_secret_value()
            if secret in _KNOWN_DEFAULT_SECRETS or len(secret) < JWT_SECRET_LENGTH_MIN:
                raise InsecureConfiguration(
                    "JWT_SECRET must be set to a random value of at least "
                    f"{JWT_SECRET_LENGTH_MIN} characters in production"
                )
            if not self.database_url:
                raise InsecureConfiguration("DATABASE_URL must be set in production")
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
        secret = self.jwt_secret.get_secret_value()
        return secret or DEVELOPMENT_JWT_SECRET


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
