"""Make a self-signed TLS certificate for the compose load balancer, once.

Run by the ``tls-init`` service of docker-compose.yml with the banking image's Python (it
ships ``cryptography``): ``python make-dev-cert.py DIR [--owner UID:GID]`` writes
``DIR/server.crt`` and ``DIR/server.key`` (the names infrastructure/nginx/banking.conf reads)
unless both exist already (a real certificate put there is kept), owned by UID:GID when
given (the key readable by that owner only). The
certificate is for ``localhost``, ``127.0.0.1`` and ``lb``; clients must be told to trust it
(``curl --cacert``), it is for development only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 365


def make_certificate(directory: Path) -> bool:
    """Write server.crt and server.key into ``directory``; False when both are there."""
    certificate_path, key_path = directory / "server.crt", directory / "server.key"
    if certificate_path.exists() and key_path.exists():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    alternative_names = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.DNSName("lb"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(alternative_names, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(key_bytes)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return True


def main() -> None:
    arguments = sys.argv[1:]
    if len(arguments) not in (1, 3) or (len(arguments) == 3 and arguments[1] != "--owner"):
        raise SystemExit("usage: make-dev-cert.py DIR [--owner UID:GID]")
    directory = Path(arguments[0])
    made = make_certificate(directory)
    if len(arguments) == 3:
        uid, _, gid = arguments[2].partition(":")
        for name in ("server.crt", "server.key"):
            os.chown(directory / name, int(uid), int(gid or uid))
    print(f"{'made' if made else 'kept'} {directory}/server.crt and server.key")


if __name__ == "__main__":
    main()
