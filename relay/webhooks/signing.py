"""The signature of a webhook delivery: ``Relay-Signature: t=UNIX_SECONDS,v1=HEX``.

HEX is HMAC-SHA256, keyed with the endpoint's secret (the whole ``whsec_...``
string, as UTF-8), over ``"{t}.{raw body}"``.  The timestamp is signed with the
body so that a captured delivery cannot be replayed later: a receiver checks
the signature, then that ``t`` is recent (``verify``'s ``tolerance``).  A
receiver compares in constant time (``hmac.compare_digest``).  The README
("Webhooks") shows the same check in a few lines a marketplace can copy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "Relay-Signature"
SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 300
"""How old a signature a receiver should accept (clock skew and retries in flight)."""


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The header's value for ``body``, signed now (or at ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid signature of ``body``, made within ``tolerance``.

    Several ``v1=`` values are allowed (a receiver may be handed one per secret
    while a secret is being replaced); any one that matches is enough."""
    fields = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key == "t"]
    given = [value for key, _, value in fields if key == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not given:
        return False
    t = int(stamps[0])
    current = time.time() if now is None else now
    if abs(current - t) > tolerance:
        return False
    expected = _digest(secret, t, body)
    return any(hmac.compare_digest(expected, value) for value in given)
