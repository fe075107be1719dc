"""TLS to PostgreSQL with libpq's URL parameters (docs/transport-security.md).

Operators write ``?sslmode=verify-full&sslrootcert=/path/ca.crt`` as they would for psql, but
asyncpg takes neither keyword (``connect() got an unexpected keyword argument 'sslmode'``)
and, given no ``ssl`` at all, silently uses ``prefer``: TLS without checking whom it talks
to. ``asyncpg_tls`` takes the libpq parameters out of the URL and turns them into the
``ssl`` connect argument with libpq's meaning:

- ``verify-full``: the server's certificate must chain to ``sslrootcert`` (the system's CAs
  when absent) and name the host; ``verify-ca``: the chain only; ``require``: encrypted,
  not verified; ``prefer`` / ``allow`` / ``disable``: as asyncpg understands them.
- ``sslcert`` / ``sslkey``: a client certificate, presented when given.
"""

from __future__ import annotations

import ssl
from typing import Any, Final

from sqlalchemy.engine import make_url

LIBPQ_TLS_PARAMETERS: Final = ("sslmode", "sslrootcert", "sslcert", "sslkey")
VERIFYING_MODES: Final = ("verify-full", "verify-ca")
PASSED_THROUGH_MODES: Final = ("require", "prefer", "allow", "disable")


class DatabaseTlsError(ValueError):
    """The database URL's TLS parameters are not usable (unknown mode, unreadable file)."""


def asyncpg_tls(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without the libpq TLS parameters, and the connect arguments they stand for
    (empty when the URL has none: asyncpg's own ``ssl`` query parameter still applies)."""
    parsed = make_url(url)
    found = {name: parsed.query[name] for name in LIBPQ_TLS_PARAMETERS if name in parsed.query}
    if not found:
        return url, {}
    if "ssl" in parsed.query:
        raise DatabaseTlsError("DATABASE_URL has both ssl= and sslmode=; keep one")
    values = {name: _single(name, value) for name, value in found.items()}
    mode = values.get("sslmode", "prefer")  # libpq's default
    stripped = parsed.difference_update_query(LIBPQ_TLS_PARAMETERS)
    stripped_url = stripped.render_as_string(hide_password=False)
    if mode in VERIFYING_MODES:
        context = _verifying_context(
            check_hostname=mode == "verify-full",
            cafile=values.get("sslrootcert", ""),
            certfile=values.get("sslcert", ""),
            keyfile=values.get("sslkey", ""),
        )
        return stripped_url, {"ssl": context}
    if mode in PASSED_THROUGH_MODES:
        if "sslrootcert" in values:
            raise DatabaseTlsError(
                f"sslrootcert is set but sslmode={mode} does not verify the server; "
                "use sslmode=verify-full"
            )
        return stripped_url, {"ssl": mode}
    raise DatabaseTlsError(
        f"sslmode must be one of {', '.join(VERIFYING_MODES + PASSED_THROUGH_MODES)}"
    )


def _single(name: str, value: str | tuple[str, ...]) -> str:
    if isinstance(value, tuple):
        raise DatabaseTlsError(f"DATABASE_URL gives {name} more than once")
    return value


def _verifying_context(
    *, check_hostname: bool, cafile: str, certfile: str, keyfile: str
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if cafile:
            # Only the named CA: a certificate from any other authority is refused.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_verify_locations(cafile=cafile)
        if certfile:
            context.load_cert_chain(certfile, keyfile or None)
    except (OSError, ssl.SSLError) as error:
        raise DatabaseTlsError(
            f"cannot load the database TLS files (sslrootcert / sslcert / sslkey): "
            f"{error.__class__.__name__}: {getattr(error, 'strerror', None) or error}"
        ) from None
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = check_hostname
    return context
