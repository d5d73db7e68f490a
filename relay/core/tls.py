"""TLS for both directions: STARTTLS offered to senders, STARTTLS to the smarthost.

Contexts are built once, at start-up, so a missing or mismatched certificate is
a clear start-up error rather than a failure in the middle of an SMTP session.
``relay tls selfsigned`` makes a certificate for trying STARTTLS out; production
uses a certificate from a real authority.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from relay.core.config import SmarthostConfig, SmtpConfig
from relay.core.durable import write_file
from relay.core.yamlload import ConfigError


class TlsError(ConfigError):
    """A certificate or key that cannot be used: a configuration problem."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


def server_context(config: SmtpConfig) -> ssl.SSLContext | None:
    """The context for inbound STARTTLS, or None when no certificate is configured."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"smtp.tls_cert/tls_key: cannot use {config.tls_cert} and {config.tls_key}: {exc}"
        ) from None
    return context


def client_context(config: SmarthostConfig) -> ssl.SSLContext:
    """The context for STARTTLS to the smarthost: verified unless ``verify`` is off."""
    try:
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"delivery.smtp.ca_file: cannot use {config.ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def generate_self_signed(cert: Path, key: Path, *, hostname: str, days: int = 365) -> None:
    """Write a self-signed certificate for ``hostname`` (plus localhost and the
    loopback addresses, for trying it out) and its RSA-2048 key (mode 0600)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write_file(key, pem, mode=0o600)
    write_file(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
