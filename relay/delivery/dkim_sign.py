"""DKIM keys and signing for the marketplace domain (RFC 6376, RFC 8463).

Signing is CPU work (dkimpy's RSA is pure Python): the worker calls ``sign``
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import dkim
import dkim.canonicalization as canonicalization
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from relay.core.durable import write_file

log = logging.getLogger("relay.dkim")

SIGNED_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"auto-submitted",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
]
"""Signed when present.  RFC 8058 §3: a one-click unsubscribe needs
``List-Unsubscribe`` and ``List-Unsubscribe-Post`` covered by a valid signature."""


class DkimError(Exception):
    """A key that cannot be read or used."""


def generate_rsa_key(path: Path, *, bits: int = 2048) -> str:
    """Write a new RSA private key to ``path`` (mode 0600); returns the DNS TXT value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write_file(path, pem, mode=0o600)
    return rsa_txt_record(pem)


def generate_ed25519_key(path: Path) -> str:
    """Write a new Ed25519 key (RFC 8463: the raw 32-byte seed, base64) to ``path``."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    write_file(path, base64.b64encode(seed) + b"\n", mode=0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"


def rsa_txt_record(pem: bytes) -> str:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise DkimError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError("the DKIM private key must be an RSA key")
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def ed25519_selector(selector: str) -> str:
    """The Ed25519 key has a selector of its own: one TXT record per selector."""
    return f"{selector}-ed25519"


def txt_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


@dataclass(frozen=True)
class Signer:
    domain: str
    selector: str
    rsa_pem: bytes
    ed25519_seed: bytes | None = None

    @classmethod
    def load(
        cls, *, domain: str, selector: str, private_key: Path, ed25519_key: Path | None
    ) -> Signer:
        try:
            pem = private_key.read_bytes()
            seed = ed25519_key.read_bytes().strip() if ed25519_key else None
        except OSError as exc:
            raise DkimError(f"cannot read DKIM key: {exc}") from None
        try:
            rsa_txt_record(pem)  # validates
        except DkimError as exc:
            raise DkimError(f"{private_key}: {exc}") from None
        signer = cls(domain=domain, selector=selector, rsa_pem=pem, ed25519_seed=seed)
        if seed is not None:  # a bad seed or a missing library: fail at start, not per message
            try:
                signer.sign(b"From: a@example.com\r\nSubject: key check\r\n\r\nx\r\n")
            except Exception as exc:
                raise DkimError(f"{ed25519_key}: cannot sign with Ed25519: {exc}") from None
        return signer

    def sign(self, data: bytes) -> bytes:
        """``data`` with DKIM-Signature header(s) prepended (Ed25519 first, if configured)."""
        headers: list[bytes] = []
        include = [h for h in SIGNED_HEADERS if _has_header(data, h)]
        if self.ed25519_seed:
            headers.append(
                dkim.sign(
                    data,
                    ed25519_selector(self.selector).encode(),
                    self.domain.encode(),
                    self.ed25519_seed,
                    signature_algorithm=b"ed25519-sha256",
                    include_headers=include,
                    canonicalize=(b"relaxed", b"relaxed"),
                )
            )
        headers.append(
            dkim.sign(
                data,
                self.selector.encode(),
                self.domain.encode(),
                self.rsa_pem,
                include_headers=include,
                canonicalize=(b"relaxed", b"relaxed"),
            )
        )
        return b"".join(headers) + data


_PURE_PYTHON_RSA_SIGN = dkim.RSASSA_PKCS1_v1_5_sign


@lru_cache(maxsize=8)
def _openssl_key(
    n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int, iqmp: int
) -> rsa.RSAPrivateKey:
    numbers = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n))
    return numbers.private_key()


def _openssl_rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's RSA signing step, done by OpenSSL (``cryptography``).

    dkimpy's own RSA arithmetic is pure Python: 6.4 of the 6.7 ms that signing a
    4 KB message took (bench/signing.py).  dkimpy still canonicalises and hashes;
    only the modular exponentiation of the finished digest moves to OpenSSL.
    PKCS#1 v1.5 is deterministic, so the signature is byte for byte the same.
    """
    key = _openssl_key(
        private_key["modulus"],
        private_key["publicExponent"],
        private_key["privateExponent"],
        private_key["prime1"],
        private_key["prime2"],
        private_key["exponent1"],
        private_key["exponent2"],
        private_key["coefficient"],
    )
    value = digest.digest()
    algorithm: hashes.HashAlgorithm = hashes.SHA256() if len(value) == 32 else hashes.SHA1()
    return key.sign(value, padding.PKCS1v15(), Prehashed(algorithm))


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign

# dkimpy parses the PEM key (in pure Python ASN.1) on every signature; the key
# does not change between messages, so it is parsed once per distinct key.
dkim.parse_pem_private_key = lru_cache(maxsize=8)(dkim.parse_pem_private_key)

_DKIMPY_RFC822_PARSE = dkim.rfc822_parse
_BLANK_LINE = re.compile(rb"\n\r?\n")


def _rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``, without splitting the body into lines.

    dkimpy splits the whole message with a regex to find the end of the header
    section and joins the body again with CRLF: 2.6 of the 9.4 ms a 200 KB
    message took to sign.  Here only the header section goes through dkimpy's
    parser; a body without bare LFs is already what dkimpy's join would give
    (CRLF-separated), so it is passed on as it is.  Anything else (no header
    section, a bare LF in the body) takes dkimpy's own path: the result is the
    same in every case (``tests/test_dkim.py`` compares the two).
    """
    end = _BLANK_LINE.search(message)
    if end is None or message.startswith((b"\n", b"\r\n")):
        return _DKIMPY_RFC822_PARSE(message)  # type: ignore[no-any-return]
    body = message[end.end() :]
    if body.count(b"\n") != body.count(b"\r\n"):
        return _DKIMPY_RFC822_PARSE(message)  # type: ignore[no-any-return]
    headers, _ = _DKIMPY_RFC822_PARSE(message[: end.end()])
    return headers, body


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalisation, as dkimpy does it, with the
    two regex passes over the body run only when they can change something.

    dkimpy always runs both: 5.2 ms of a 200 KB message whose base64 attachment
    has no whitespace to remove.  A byte search (in C, no regex engine) decides
    whether trailing whitespace or a run of whitespace exists at all.
    """
    if b" \r\n" in body or b"\t\r\n" in body:
        body = canonicalization.strip_trailing_whitespace(body)
    if b"\t" in body or b"  " in body:
        body = canonicalization.compress_whitespace(body)
    trimmed: bytes = canonicalization.strip_trailing_lines(body)
    return trimmed if trimmed != b"\r\n" else b""  # dkimpy's correct_empty_body


_DKIMPY_RELAXED_BODY = canonicalization.Relaxed.canonicalize_body
dkim.rfc822_parse = _rfc822_parse
canonicalization.Relaxed.canonicalize_body = staticmethod(_relaxed_body)


def _has_header(data: bytes, name: bytes) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return head.startswith(name + b":") or (b"\r\n" + name + b":") in head


def ensure_key(path: Path, selector: str, domain: str) -> None:
    """Create the RSA key on first start and log the record to publish (README, "The two
    commands")."""
    if path.exists():
        return
    record = generate_rsa_key(path)
    log.warning(
        'created DKIM key %s; publish TXT %s "%s"', path, txt_record_name(selector, domain), record
    )
