"""Where a webhook may point: a public http(s) address, never the bank's own network.

A URL is refused when it is not http(s), carries user information, is longer than
``URL_LENGTH_MAX`` or names a host whose addresses (every one it resolves to) include a
private, loopback, link-local, multicast, reserved, unspecified or otherwise non-global
address (an IPv4-mapped IPv6 address is judged as the IPv4 address it maps), unless the
address is inside an operator's ``WEBHOOK_ALLOWED_NETWORKS``. The check runs when a webhook is
created and again before every delivery, and the delivery connects to the very address that
was checked (no second lookup an attacker's DNS could answer differently).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit

from banking.domain.errors import ValidationFailed

URL_LENGTH_MAX: Final = 2048
RESOLVE_TIMEOUT_SECONDS: Final = 3.0
_SCHEMES: Final = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses the host resolves to (``socket.getaddrinfo`` by default).
Resolver = Callable[[str, int], Awaitable[list[str]]]


class RefusedTarget(ValidationFailed):
    """A webhook URL that may not be used (422 ``VALIDATION_ERROR`` on field ``url``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="url")


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: its parts and the addresses it may be reached at (all allowed)."""

    url: str
    scheme: str
    host: str
    port: int
    path_and_query: str
    addresses: tuple[IPAddress, ...]


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses as the operating system resolves them (bounded in time)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (TimeoutError, OSError, UnicodeError) as error:
        raise RefusedTarget(f"url host {host!r} cannot be resolved") from error
    return [str(info[4][0]) for info in infos]


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """``WEBHOOK_ALLOWED_NETWORKS`` as networks (the settings already checked each one)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def refusal_reason(address: IPAddress) -> str | None:
    """Why a webhook may not target ``address`` (None when it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    for name, applies in checks:
        if applies:
            return name
    return None


def _allowed(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate.version == network.version and candidate in network
        for candidate in candidates
        for network in networks
    )


def split_url(url: str) -> tuple[SplitResult, str, int]:
    """The parts, host and port of a webhook URL that is well formed (RefusedTarget if not)."""
    if len(url) > URL_LENGTH_MAX:
        raise RefusedTarget(f"url is longer than {URL_LENGTH_MAX} characters")
    if not url.isprintable() or " " in url:
        raise RefusedTarget("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedTarget(f"url is not valid: {error}") from error
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise RefusedTarget("url must be an http or https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise RefusedTarget("url must not contain user information (user:password@)")
    host = parts.hostname
    if not host:
        raise RefusedTarget("url must name a host")
    return parts, host, port if port is not None else _SCHEMES[scheme]


async def check_target(
    url: str, *, allowed_networks: Sequence[IPNetwork], resolver: Resolver = system_resolver
) -> Target:
    """``url`` checked against SSRF: every address of its host must be allowed."""
    parts, host, port = split_url(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    texts = [str(literal)] if literal is not None else await resolver(host, port)
    addresses: list[IPAddress] = []
    for text in texts:
        try:
            address = ipaddress.ip_address(text.partition("%")[0])  # drop an IPv6 zone
        except ValueError as error:
            raise RefusedTarget(f"url host {host!r} resolves to an unusable address") from error
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedTarget(f"url host {host!r} has no address")
    for address in addresses:
        reason = refusal_reason(address)
        if reason is not None and not _allowed(address, allowed_networks):
            raise RefusedTarget(
                f"url host {host!r} resolves to {address}, a {reason} address: webhooks may "
                "only target public addresses (or WEBHOOK_ALLOWED_NETWORKS)"
            )
    path = parts.path or "/"
    return Target(
        url=url,
        scheme=parts.scheme.lower(),
        host=host,
        port=port,
        path_and_query=path + (f"?{parts.query}" if parts.query else ""),
        addresses=tuple(addresses),
    )


def pinned_url(target: Target, address: IPAddress) -> str:
    """The target's URL with its host replaced by ``address`` (connect to what was checked)."""
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{target.scheme}://{host}:{target.port}{target.path_and_query}"


def host_header(target: Target) -> str:
    """The ``Host`` header of the target's URL (its port only when not the default)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if _SCHEMES[target.scheme] == target.port else f"{host}:{target.port}"
