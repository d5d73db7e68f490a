"""An independent oracle for "no real address reaches the recipient" (SECURITY.md).

It deliberately shares no code with ``relay.message.tokenizer``: it looks at what a mail
client would show of the delivered bytes — the bytes themselves, headers decoded
the strict and the lenient way, MIME parameters, every text part decoded, attached
messages even if (wrongly) base64-encoded — and at each under the spellings that
hide an ``@`` or a character from a naive search: HTML entities, percent-encoding,
quoted-printable (soft line breaks included), Q-encoding.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.policy
import html
import quopri
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from urllib.parse import unquote

_QP_ESCAPE = re.compile(r"=([0-9A-Fa-f]{2})")


def _spellings(text: str) -> Iterator[str]:
    """``text`` and what it says once entities, percent- and =XX-escapes are undone."""
    yield text
    unescaped = html.unescape(text)
    yield unescaped
    yield unquote(text, errors="replace")
    yield unquote(unescaped, errors="replace")
    yield _QP_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    yield html.unescape(unquote(unescaped, errors="replace"))


def mentions(text: str, address: str) -> bool:
    """Whether ``text`` spells ``address`` (any case, any of the escapes above,
    whitespace around the ``@`` ignored)."""
    local, _, domain = address.lower().rpartition("@")
    pattern = re.compile(re.escape(local) + r"\s*@\s*" + re.escape(domain))
    return any(pattern.search(t.lower()) for t in _spellings(text))


def _texts_of_bytes(data: bytes) -> Iterator[str]:
    yield data.decode("latin-1")
    yield data.decode("utf-8", "replace")
    yield quopri.decodestring(data).decode("utf-8", "replace")


def _decoded_headers(value: str) -> list[str]:
    """The value, decoded the strict way and the lenient way (either may give up)."""
    found = [value]
    with contextlib.suppress(Exception):
        found.append(str(make_header(decode_header(value))))
    with contextlib.suppress(Exception):
        found.append(str(email.policy.default.header_factory("x-check", unfold(value))))
    return found


def unfold(value: str) -> str:
    return "".join(value.splitlines())


def _b64(text: bytes) -> bytes:
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", text)
    clean = clean[: len(clean) - 1] if len(clean) % 4 == 1 else clean
    try:
        return base64.b64decode(clean + b"=" * (-len(clean) % 4))
    except (binascii.Error, ValueError):
        return b""


def _part_texts(part: Message, *, top: bool, skip_to: bool) -> Iterator[str]:
    items = part.raw_items() if isinstance(part, EmailMessage) else part.items()
    for name, raw in items:
        if top and skip_to and name.lower() == "to":
            continue
        yield name
        value = str(raw)
        yield from _decoded_headers(value)
        if name.lower() in ("content-type", "content-disposition"):
            for _key, param in part.get_params([], header=name):
                yield email.utils.collapse_rfc2231_value(param)
    for attr in ("preamble", "epilogue"):
        text = getattr(part, attr, None)
        if text:
            yield text
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if part.get_content_maintype() == "message" and cte in ("base64", "quoted-printable"):
        # An attached message that is itself encoded: clients decode it anyway.
        for inner in part.get_payload():
            assert isinstance(inner, Message)
            encoded = inner.as_bytes()
            decoded = _b64(encoded) if cte == "base64" else quopri.decodestring(encoded)
            yield from _texts_of_bytes(decoded)
    if part.is_multipart():
        return
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or part.get_content_maintype() not in ("text", "multipart"):
        return
    yield from _texts_of_bytes(payload)
    for charset in (part.get_content_charset(), "utf-16"):
        try:
            text = payload.decode(charset or "utf-8")
        except (LookupError, UnicodeError):
            continue
        yield text


def _without_to(data: bytes) -> bytes:
    """The message bytes minus the top-level To header (which names the recipient)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(b"to:")
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def find_leaks(data: bytes, address: str, *, except_to: bool = False) -> list[str]:
    """Where ``address`` shows in the delivered ``data`` (an empty list: nowhere).

    ``except_to``: the address may be in the top-level To header (the recipient's own).
    """
    found: list[str] = []
    raw = _without_to(data) if except_to else data
    for text in _texts_of_bytes(raw):
        if mentions(text, address):
            found.append(f"bytes: {_context(text, address)}")
            break
    msg = email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
    for part in msg.walk():
        for text in _part_texts(part, top=part is msg, skip_to=except_to):
            if mentions(text, address):
                found.append(f"{part.get_content_type()}: {_context(text, address)}")
                break
    return found


def _context(text: str, address: str) -> str:
    local = address.partition("@")[0].lower()
    at = text.lower().find(local)
    return text[max(0, at - 60) : at + 80] if at >= 0 else text[:120]
