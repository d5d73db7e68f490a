"""Token addresses: how they are drawn, written and recognised.

Tokens are 16 characters of ``[a-z0-9]`` drawn with ``secrets`` (about 82 bits),
matched case-insensitively (SECURITY.md, "Nothing real leaks").  The directory
draws them, the SMTP front recognises them in RCPT TO, the queue draws VERP
bounce addresses from the same alphabet; replacing real addresses by tokens in
a message is ``relay.message.tokenizer``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum

from relay.core import addresses

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
TOKEN_LENGTH = 16
_TOKEN_RE = re.compile(rf"^[a-z0-9]{{{TOKEN_LENGTH}}}$")
BOUNCE_PREFIX = "bounce+"


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def token_address(token: str, domain: str) -> str:
    return f"{token}@{domain}"


class LocalKind(Enum):
    FOREIGN = "foreign"
    TOKEN = "token"
    BOUNCE = "bounce"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: LocalKind
    value: str = ""


def classify_recipient(address: str, domain: str) -> Recipient:
    """What an envelope recipient names: a token, a VERP bounce address, or nothing of ours.

    Source routes (``@a:b@c``) and the ``%`` hack are never ours: they are how open
    relays are abused (RFC 5321 §3.6.1 lets us ignore the route; we refuse it).
    """
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if address.startswith("@") or ":" in address:
        return Recipient(LocalKind.FOREIGN)
    try:
        normalized = addresses.normalize(address)
    except addresses.InvalidAddress:
        return Recipient(LocalKind.FOREIGN)
    local, _, dom = normalized.rpartition("@")
    if dom != addresses.normalize(f"x@{domain}").rpartition("@")[2]:
        return Recipient(LocalKind.FOREIGN)
    if "%" in local or "!" in local:
        return Recipient(LocalKind.FOREIGN)
    if local.startswith(BOUNCE_PREFIX):
        return Recipient(LocalKind.BOUNCE, local[len(BOUNCE_PREFIX) :])
    if _TOKEN_RE.match(local):
        return Recipient(LocalKind.TOKEN, local)
    return Recipient(LocalKind.UNKNOWN, local)
