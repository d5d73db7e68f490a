"""Build the message the recipient sees (SPEC §4).

The top-level header set is an allow-list: what a mail client needs to show and
thread the message (Subject, Date, MIME structure, a few presentation headers)
and ``X-`` headers that do not carry the sender's infrastructure.  Everything
else — Received, Return-Path, Sender, Reply-To, Cc, Bcc, old DKIM and ARC
signatures, vendor trace headers — is left out.  From, To, Message-ID and the
threading headers are ours.  Then every real address still anywhere in the
message (headers, bodies, attached messages, preambles) becomes a token, and a
last check refuses to let a message out if the counterpart's address survived.
"""

from __future__ import annotations

import contextlib
import email.policy
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from relay import addresses
from relay.parse import TRACE_HEADER
from relay.tokenizer import (
    AddressMap,
    carries_infrastructure,
    decode_header_text,
    rewrite_text_part,
    tokenize_parts,
)

KEPT_HEADERS = frozenset(
    {
        "subject",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
        "content-description",
        "content-id",
        "accept-language",
        "importance",
        "priority",
        "sensitivity",
        "keywords",
        "comments",
        "auto-submitted",
        "thread-topic",
    }
)

INFRASTRUCTURE_HEADERS = (
    "received",
    "return-path",
    "sender",
    "reply-to",
    "bcc",
    "dkim-signature",
    "domainkey-signature",
    "authentication-results",
    "received-spf",
    "delivered-to",
    "x-original-to",
    "errors-to",
    "disposition-notification-to",
    "return-receipt-to",
    "user-agent",
    "x-mailer",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "resent-date",
    "resent-message-id",
    TRACE_HEADER.lower(),
)
"""Dropped inside attached messages too (where From/To/Cc are kept, tokenized)."""


class UnsafeMessage(Exception):
    """The counterpart's real address could not be removed from the message."""


@dataclass(frozen=True, slots=True)
class Party:
    display_name: str
    token: str
    """The party's token address."""
    real: Sequence[str]
    """The party's real addresses (the first is where mail to it goes)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    data: bytes
    smtputf8: bool


def compose(
    msg: EmailMessage,
    *,
    sender: Party,
    recipient: Party,
    message_id: str,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    hostname: str,
) -> Outgoing:
    """Rewrite ``msg`` (in place) for ``recipient``; returns the bytes to deliver.

    Raises UnsafeMessage if a real address of the sender is still in the result.
    """
    amap = AddressMap(
        {**{a: sender.token for a in sender.real}, **{a: recipient.token for a in recipient.real}}
    )
    tokenize_parts(msg, amap, drop=INFRASTRUCTURE_HEADERS)
    if not msg.is_multipart() and msg.get_content_maintype() == "text":
        rewrite_text_part(msg, amap)
    _rewrite_boundary_text(msg, amap)

    kept: list[tuple[str, str]] = []
    for name, raw in msg.raw_items():
        lname = name.lower()
        value = decode_header_text(str(raw))
        if lname in KEPT_HEADERS or (
            lname.startswith("x-")
            and lname not in INFRASTRUCTURE_HEADERS
            and not carries_infrastructure(name, value)
        ):
            if lname.startswith("content-") or lname == "mime-version":
                kept.append((name, amap.replace(value) if amap.found_in(value) else str(raw)))
            else:
                kept.append((name, " ".join(amap.replace(value).split())))
    for name in {n for n, _ in msg.raw_items()}:
        del msg[name]

    msg["From"] = addresses.format_address(sender.display_name, sender.token)
    msg["To"] = addresses.format_address(recipient.display_name, recipient.real[0])
    for name, value in kept:
        if name.lower() == "date":
            continue
        _set(msg, name, value)
    date = next((v for n, v in kept if n.lower() == "date"), None)
    _set(msg, "Date", date or formatdate(localtime=False))
    if "Date" not in msg:
        msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = " ".join(in_reply_to)
    if references:
        msg["References"] = " ".join(references)
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    msg[TRACE_HEADER] = hostname

    smtputf8 = not recipient.real[0].isascii()
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    data = msg.as_bytes(policy=policy)
    if leaks(data, msg, sender.real):
        raise UnsafeMessage("a real address of the sender is still in the message")
    return Outgoing(data=data, smtputf8=smtputf8)


def _set(msg: EmailMessage, name: str, value: str) -> None:
    # A value the header's own syntax cannot carry is left out.
    with contextlib.suppress(Exception):
        msg[name] = value


def _rewrite_boundary_text(msg: EmailMessage, amap: AddressMap) -> None:
    for part in msg.walk():
        for attr in ("preamble", "epilogue"):
            text = getattr(part, attr, None)
            if text and amap.found_in(text):
                setattr(part, attr, amap.replace(text))


def leaks(data: bytes, msg: EmailMessage, real: Sequence[str]) -> bool:
    """Whether any spelling of the ``real`` addresses is in the bytes or in any
    decoded text part (quoted-printable and base64 hide addresses from a byte scan)."""
    check = AddressMap(dict.fromkeys(real, "x@x"))
    if check.found_in(data.decode("latin-1")) or check.found_in(data.decode("utf-8", "replace")):
        return True
    for part in msg.walk():
        if part.get_content_maintype() == "text" and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and check.found_in(payload.decode("utf-8", "replace")):
                return True
    return False
