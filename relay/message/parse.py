"""Bytes → EmailMessage, plus the few facts the pipeline needs from the headers.

Parsing never raises on malformed input: the ``email`` package records defects
instead, and every header we read goes through a guard that falls back to the
raw text.  What cannot be handled becomes an SMTP reply, never a traceback.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, replace
from email.message import EmailMessage, Message

from relay.core.refusals import Refusal, Refused
from relay.message import mailpolicy
from relay.message.tokenizer import decode_header_text

TRACE_HEADER = "X-Marketplace-Relay"
"""Added to everything we deliver; seeing our own hostname in it again is a loop."""

MAX_NESTING = 50
"""MIME parts (multiparts, attached messages) inside one another.  Real mail stays
under a dozen; the ``email`` package recurses per level, and a few hundred levels
exhaust Python's stack while parsing, rewriting or writing the message."""


_MSGID_RE = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True, slots=True)
class ParsedMail:
    message: EmailMessage
    subject: str
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    auto_submitted: bool
    """RFC 3834 auto-submitted mail, a DSN, or list/bulk mail: never answered."""
    source: bytes
    """The bytes ``message`` was parsed from."""
    shared: bool = False
    """``message`` is other recipients' copy too (``relay.pipeline.filtering.copies``):
    it is never changed; a copy that must change gets its own parse (``reparse``)."""


def header_text(msg: EmailMessage, name: str) -> str:
    """The decoded value of the first ``name`` header, or "" (never raises)."""
    for key, raw in msg.raw_items():
        if key.lower() == name.lower():
            return " ".join(decode_header_text(str(raw)).split())
    return ""


def header_values(msg: EmailMessage, name: str) -> list[str]:
    return [str(raw) for key, raw in msg.raw_items() if key.lower() == name.lower()]


def message_ids(value: str) -> tuple[str, ...]:
    return tuple(_MSGID_RE.findall(value))


def parse(raw: bytes, *, hostname: str, max_hops: int) -> ParsedMail:
    """Parse a message as received; raises Refused(MAIL_LOOP) for a loop and
    Refused(TOO_DEEP) for a MIME structure nested beyond MAX_NESTING."""
    try:
        msg = email.message_from_bytes(raw, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    except RecursionError:
        raise Refused(Refusal.TOO_DEEP) from None
    assert isinstance(msg, EmailMessage)
    if nesting(msg) > MAX_NESTING:
        raise Refused(Refusal.TOO_DEEP)
    hops = len(header_values(msg, "Received"))
    if hops > max_hops:
        raise Refused(Refusal.MAIL_LOOP, f"Mail loop detected: {hops} hops")
    for trace in header_values(msg, TRACE_HEADER):
        if trace.strip().lower() == hostname.lower():
            raise Refused(Refusal.MAIL_LOOP)
    ids = message_ids(header_text(msg, "Message-ID"))
    auto = header_text(msg, "Auto-Submitted").lower()
    precedence = header_text(msg, "Precedence").lower()
    content_type = header_text(msg, "Content-Type").lower()
    return ParsedMail(
        message=msg,
        subject=header_text(msg, "Subject"),
        message_id=ids[0] if ids else None,
        in_reply_to=message_ids(" ".join(header_values(msg, "In-Reply-To"))),
        references=message_ids(" ".join(header_values(msg, "References"))),
        auto_submitted=(
            (bool(auto) and not auto.startswith("no"))
            or precedence in {"bulk", "junk", "list"}
            or "multipart/report" in content_type
        ),
        source=raw,
    )


def reparse(parsed: ParsedMail, raw: bytes | None = None) -> ParsedMail:
    """``parsed`` with a message of its own, parsed from ``raw`` (by default the bytes
    ``parsed`` came from); the facts ``parse`` read off the headers stay its own."""
    raw = parsed.source if raw is None else raw
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    assert isinstance(msg, EmailMessage)
    return replace(parsed, message=msg, source=raw, shared=False)


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_HEADER_START = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)


def check_header(raw: bytes, *, max_bytes: int, max_headers: int) -> None:
    """Refuse a header section over the limits (HEADER_TOO_BIG) before it is parsed:
    the email package's header handling is slow enough on huge headers to be a
    way to tie up the relay."""
    end = _HEADER_END.search(raw, 0, max_bytes + 4)
    size = end.start() if end else len(raw)
    if size > max_bytes:
        raise Refused(Refusal.HEADER_TOO_BIG, f"Message header too large (over {max_bytes} bytes)")
    count = len(_HEADER_START.findall(raw, 0, size))
    if count > max_headers:
        raise Refused(Refusal.HEADER_TOO_BIG, f"Too many header fields (over {max_headers})")


def nesting(msg: Message) -> int:
    """How deep MIME parts go inside ``msg`` (1: a single part); no recursion."""
    deepest = 0
    stack: list[tuple[Message, int]] = [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    return deepest
