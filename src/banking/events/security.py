"""How every Kafka client of the service authenticates and encrypts (docs/transport-security.md).

One function, ``kafka_security``, turns the ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*`` /
``KAFKA_SSL_*`` settings into the keyword arguments of aiokafka's producer, consumer and admin
client, so that no client of the service is left on plaintext by mistake. The password is
handed to aiokafka only; it is never logged and never part of an error message.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiokafka.helpers import create_ssl_context

from banking.config import Settings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS: Final = ("SCRAM-SHA-512", "SCRAM-SHA-256")


class KafkaSecurityError(ValueError):
    """The Kafka security settings do not make a usable client configuration."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The transport settings of one Kafka client (secrets held here only, ``repr`` hides them)."""

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    def __repr__(self) -> str:
        return (
            f"KafkaSecurity(protocol={self.protocol!r}, sasl_mechanism={self.sasl_mechanism!r}, "
            f"sasl_username={self.sasl_username!r}, sasl_password='***', "
            f"ssl_cafile={self.ssl_cafile!r})"
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and
        ``AIOKafkaAdminClient``; raises ``KafkaSecurityError`` for an unusable combination."""
        self._check()
        if self.protocol == "PLAINTEXT":
            return {"security_protocol": "PLAINTEXT"}
        kwargs: dict[str, Any] = {
            "security_protocol": self.protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.protocol == "SASL_SSL":
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        """The broker's certificate is verified against ``ssl_cafile`` (the system's CAs when
        empty) and its host name is checked; an optional client certificate is presented."""
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile or None,
                certfile=self.ssl_certfile or None,
                keyfile=self.ssl_keyfile or None,
            )
        except (OSError, ssl.SSLError) as error:
            raise KafkaSecurityError(
                f"cannot load the Kafka TLS files (KAFKA_SSL_CAFILE / KAFKA_SSL_CERTFILE / "
                f"KAFKA_SSL_KEYFILE): {error.__class__.__name__}: {error.strerror or error}"
            ) from None
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _check(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise KafkaSecurityError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.protocol == "SASL_SSL":
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise KafkaSecurityError(
                    f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username or not self.sasl_password:
                raise KafkaSecurityError(
                    "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and "
                    "KAFKA_SASL_PASSWORD"
                )
        elif self.sasl_username or self.sasl_password:
            # A password meant for SASL is never sent over a connection that would not use it.
            raise KafkaSecurityError(
                "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD are set but "
                f"KAFKA_SECURITY_PROTOCOL is {self.protocol}, not SASL_SSL"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise KafkaSecurityError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        if self.protocol == "PLAINTEXT" and (self.ssl_cafile or self.ssl_certfile):
            raise KafkaSecurityError(
                "KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT"
            )


def kafka_security_of(settings: Settings) -> KafkaSecurity:
    """The Kafka transport settings of this process."""
    return KafkaSecurity(
        protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=settings.kafka_sasl_password.get_secret_value(),
        ssl_cafile=settings.kafka_ssl_cafile,
        ssl_certfile=settings.kafka_ssl_certfile,
        ssl_keyfile=settings.kafka_ssl_keyfile,
    )


def kafka_security(settings: Settings) -> dict[str, Any]:
    """The security keyword arguments every producer, consumer and admin client is built with."""
    return kafka_security_of(settings).client_kwargs()
