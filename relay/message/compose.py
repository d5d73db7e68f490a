"""Build the message the recipient sees (SECURITY.md, "Nothing real leaks").

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
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message
from email.utils import collapse_rfc2231_value, formatdate

from relay.core import addresses, names
from relay.message import mailpolicy
from relay.message.parse import TRACE_HEADER
from relay.message.tokenizer import (
    AddressMap,
    carries_infrastructure,
    clean_header_value,
    decode_header_text,
    encoded_message_bytes,
    header_as_text,
    rewrite_params,
    rewrite_text_part,
    set_header,
    shown_as_text,
    text_decodings,
    tokenize_parts,
    unfold,
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


log = logging.getLogger("relay.compose")

_HEADERS = mailpolicy.DEFAULT.header_factory


class UnsafeMessage(Exception):
    """The sender's real address could not be removed from the message, or the
    message is too malformed to be rewritten at all."""


class MalformedMessage(UnsafeMessage):
    """The message is too malformed for the ``email`` package to rewrite at all."""


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

    Raises UnsafeMessage if a real address of the sender is still in the result,
    or if the message is too malformed to be rewritten at all.
    """
    smtputf8 = not recipient.real[0].isascii()
    policy = mailpolicy.SMTPUTF8 if smtputf8 else mailpolicy.SMTP
    try:
        _rewrite(msg, sender, recipient, message_id, in_reply_to, references, hostname)
        _make_writable(msg, policy)
        data = msg.as_bytes(policy=policy)
        leaked = leaks(data, sender.real)
    except Exception as exc:
        # Malformed beyond what the email package can take apart and write back: a
        # notice to the sender beats a 451 they would retry for days.  Logged with
        # the traceback, since it also means a case the rewriting should learn.
        log.warning("message cannot be rewritten", exc_info=True)
        raise MalformedMessage(f"the message cannot be rewritten ({type(exc).__name__})") from None
    if leaked:
        raise UnsafeMessage("a real address of the sender is still in the message")
    return Outgoing(data=data, smtputf8=smtputf8)


def _rewrite(
    msg: EmailMessage,
    sender: Party,
    recipient: Party,
    message_id: str,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    hostname: str,
) -> None:
    amap = _address_map(sender, recipient)
    tokenize_parts(msg, amap, drop=INFRASTRUCTURE_HEADERS)
    if not msg.is_multipart() and msg.get_content_maintype() == "text":
        rewrite_text_part(msg, amap)
    _rewrite_boundary_text(msg, amap)

    kept = kept_headers(((name, str(raw)) for name, raw in msg.raw_items()), amap)
    for name in {n for n, _ in msg.raw_items()}:
        del msg[name]

    # Display names come from registrations: made safe to write whatever is stored.
    msg["From"] = addresses.format_address(names.display_name(sender.display_name), sender.token)
    msg["To"] = addresses.format_address(
        names.display_name(recipient.display_name), recipient.real[0]
    )
    for name, value in kept:
        if name.lower() == "date":
            continue
        set_header(msg, name, value)
    date = next((v for n, v in kept if n.lower() == "date"), None)
    set_header(msg, "Date", date or formatdate(localtime=False))
    if getattr(msg["Date"], "datetime", None) is None:  # missing or unparseable
        del msg["Date"]
        msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = " ".join(in_reply_to)
    if references:
        msg["References"] = " ".join(references)
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    msg[TRACE_HEADER] = hostname


def _address_map(sender: Party, recipient: Party) -> AddressMap:
    """Both parties' real addresses, each to its token."""
    return AddressMap(
        {**{a: sender.token for a in sender.real}, **{a: recipient.token for a in recipient.real}}
    )


def kept_headers(fields: Iterable[tuple[str, str]], amap: AddressMap) -> list[tuple[str, str]]:
    """The top-level headers the recipient gets, from the (name, raw value) pairs
    received, in order: the allow-list, addresses replaced.  MIME headers keep
    their raw (unfolded) value unless an address had to be replaced; the others
    are decoded and single-spaced.  From, To, Message-ID and threading are not
    among them: the relay writes its own."""
    kept: list[tuple[str, str]] = []
    for name, raw in fields:
        lname = name.lower()
        value = decode_header_text(raw)
        if lname in KEPT_HEADERS or (
            lname.startswith("x-")
            and lname not in INFRASTRUCTURE_HEADERS
            and not carries_infrastructure(name, value)
            and not amap.found_in(name)
        ):
            if lname.startswith("content-") or lname == "mime-version":
                new = None
                if lname in ("content-type", "content-disposition"):
                    new = rewrite_params(name, raw, amap)
                if new is None and amap.found_in(value):
                    new = amap.replace_all(value)
                kept.append((name, unfold(raw) if new is None else new))
            else:
                kept.append((name, " ".join(amap.replace_all(value).split())))
    return kept


def _make_writable(msg: EmailMessage, policy: email.policy.EmailPolicy[EmailMessage]) -> None:
    """Headers the ``email`` package would fail to write (it raises on some
    malformed address lists, and on raw 8-bit bytes in a header it must refold)
    are replaced by their text, so that one bad header does not sink a message."""
    for part in msg.walk():
        for name, value in list(part.raw_items()):
            try:
                policy.fold_binary(name, value)
            except Exception:
                _replace_as_text(part, name, policy)


def _replace_as_text(
    part: Message, name: str, policy: email.policy.EmailPolicy[EmailMessage]
) -> None:
    values = [v for n, v in part.raw_items() if n.lower() == name.lower()]
    del part[name]
    for value in values:
        try:
            policy.fold_binary(name, value)
            part[name] = value if isinstance(value, BaseHeader) else clean_header_value(value)
        except Exception:
            text = header_as_text(name, str(value))
            with contextlib.suppress(Exception):  # unwritable even as text: left out
                policy.fold_binary(name, text)
                part[name] = text


def _rewrite_boundary_text(msg: EmailMessage, amap: AddressMap) -> None:
    for part in msg.walk():
        for attr in ("preamble", "epilogue"):
            text = getattr(part, attr, None)
            if text and amap.found_in(text):
                setattr(part, attr, amap.replace_all(text))


def leaks(data: bytes, real: Sequence[str]) -> bool:
    """Whether any spelling of the ``real`` addresses is in the bytes, or in what a
    mail client shows of them: decoded headers and parameters, decoded text parts
    (quoted-printable and base64 hide addresses from a byte scan), attached messages
    sent encoded.  The bytes are parsed afresh, as the recipient's client will."""
    check = AddressMap(dict.fromkeys(real, "x@x"))
    if check.found_in(data.decode("latin-1")) or check.found_in(data.decode("utf-8", "replace")):
        return True
    delivered = email.message_from_bytes(data, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    return any(_part_leaks(part, check) for part in delivered.walk())


def _part_leaks(part: Message, check: AddressMap) -> bool:
    return _headers_leak(part, check) or _content_leaks(part, check)


def _headers_leak(part: Message, check: AddressMap) -> bool:
    for name, raw in part.raw_items():
        if check.found_in(decode_header_text(str(raw))):
            return True
        if name.lower() in ("content-type", "content-disposition"):
            # Parameters as two parsers read them (both raise on some malformed values).
            values: list[str] = []
            with contextlib.suppress(Exception):
                params = part.get_params([], header=name)
                values.extend(collapse_rfc2231_value(v) for _k, v in params)
            with contextlib.suppress(Exception):
                values.extend(map(str, _HEADERS(name, unfold(str(raw))).params.values()))
            if any(check.found_in(decode_header_text(v)) for v in values):
                return True
    return False


def _content_leaks(part: Message, check: AddressMap) -> bool:
    for attr in ("preamble", "epilogue"):
        if check.found_in(getattr(part, attr, None) or ""):
            return True
    payload: object = encoded_message_bytes(part)  # an attached message left encoded
    if payload is None:
        if not shown_as_text(part):
            return False
        payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return False
    decodings = text_decodings(payload, part.get_content_charset())
    return any(check.found_in(text) for text, _exact in decodings)
