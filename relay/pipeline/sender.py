"""The sender stage: what the From header claims, and whether the route allows it.

The envelope sender was checked at RCPT (``directory.route``); the From header is
what the recipient's mail program would show, so it must claim only addresses
the sender may write from.  A From nobody can read is refused too: a From
nobody can check is a From anybody could forge.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from email.message import EmailMessage

from relay.core import addresses
from relay.core.refusals import Refusal, Refused
from relay.message.parse import header_values
from relay.message.tokenizer import decode_header_text
from relay.storage.directory import Route


def check(claimed: Sequence[str], routes: Sequence[Route]) -> None:
    """Raises Refused(FROM_MISMATCH) unless every claimed address is one the
    sender of each route may write from."""
    for route in routes:
        if not set(claimed) <= set(route.sender_addresses):
            raise Refused(Refusal.FROM_MISMATCH)


def from_addresses(message: EmailMessage) -> list[str]:
    """The addresses the From header claims, normalised; raises
    Refused(FROM_MISMATCH) if it cannot be read.

    A display name counts for nothing, only the address does: in
    ``0@0 <maria@buyer.example>``, ``<0@0> <maria@buyer.example>`` or
    ``"shop@seller.example" <x@y>`` the claim is the last address in angle
    brackets (the recipient never sees the display name: the relay writes its own
    From).  A mailbox without angle brackets claims its bare address; a bare name
    or word claims none."""
    values = header_values(message, "From")
    if not values:
        return []
    if len(values) > 1:
        raise Refused(Refusal.FROM_MISMATCH)
    text = " ".join(decode_header_text(values[0]).split())
    found: list[str] = []
    for mailbox in _mailboxes(text):
        # The address is the last angle address: whatever comes before it, even
        # "<0@0>" unquoted, is the display name.
        angle = _ANGLE_ADDRESS.findall(_QUOTED.sub('""', mailbox))[-1:]
        claims = angle or [a for _n, a in email.utils.getaddresses([mailbox]) if "@" in a]
        if not claims and "@" in _QUOTED.sub("", mailbox):  # "<maria@>": unreadable
            raise Refused(Refusal.FROM_MISMATCH)
        try:
            found.extend(addresses.normalize(a) for a in claims)
        except addresses.InvalidAddress:
            raise Refused(Refusal.FROM_MISMATCH) from None
    return found


def _mailboxes(text: str) -> list[str]:
    """``text`` split at its top-level commas: not inside quotes, angle brackets
    or comments."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = comment = 0
    for ch in text:
        current.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or comment):
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch == "(":
            comment += 1
        elif ch == ")" and comment:
            comment -= 1
        elif ch == "<" and not comment:
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == "," and not (angle or comment):
            current.pop()
            parts.append("".join(current))
            current = []
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_ANGLE_ADDRESS = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
