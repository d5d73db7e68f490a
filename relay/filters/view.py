"""One message as the filter rules see it: what its reader would see.

Built once per message and shared by every rule: the decoded subject and
headers, each text body (HTML bodies also as visible text, links and linked
images) and each attachment's decoded bytes.  Parts are numbered in
``message.walk()`` order, which is how a rule's finding points at the part that
``strip`` removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage, Message
from functools import cached_property

from relay.filters.base import Role
from relay.filters.html import HtmlScan, scan
from relay.message.parse import header_text
from relay.message.tokenizer import (
    decode_encoded_messages,
    decode_header_text,
    shown_as_text,
    text_decodings,
)


@dataclass(frozen=True, slots=True)
class TextBody:
    index: int
    html: bool
    source: str
    """The decoded part: plain text, or the HTML markup."""

    @property
    def where(self) -> str:
        return "HTML body" if self.html else "text body"


@dataclass(frozen=True, slots=True)
class Attachment:
    index: int
    filename: str
    declared: str
    """The Content-Type the sender declared (never trusted, only compared)."""
    data: bytes
    inline: bool

    @property
    def label(self) -> str:
        return f'attachment "{self.filename}"' if self.filename else f"inline {self.declared} part"


class MessageView:
    """Lazily computed views of one message; matchers read, never modify, it."""

    def __init__(self, message: EmailMessage, role: Role) -> None:
        decode_encoded_messages(message)  # base64 message/rfc822: its parts count too
        self.message = message
        self.role = role
        self.parts: list[Message] = list(message.walk())
        self.infos = [PartInfo.of(part) for part in self.parts]

    @cached_property
    def subject(self) -> str:
        return header_text(self.message, "Subject")

    @cached_property
    def headers(self) -> list[tuple[str, str]]:
        """Top-level headers, decoded (RFC 2047), in order; never raises."""
        return [
            (str(name), " ".join(decode_header_text(str(value)).split()))
            for name, value in self.message.raw_items()
        ]

    @cached_property
    def bodies(self) -> list[TextBody]:
        out: list[TextBody] = []
        for index, (part, info) in enumerate(zip(self.parts, self.infos, strict=True)):
            if info.body:
                out.append(TextBody(index, info.ctype == "text/html", part_text(part)))
        return out

    @cached_property
    def attachments(self) -> list[Attachment]:
        out: list[Attachment] = []
        for index, (part, info) in enumerate(zip(self.parts, self.infos, strict=True)):
            if info.multipart or info.body or info.ctype.startswith("message/"):
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            out.append(
                Attachment(
                    index=index,
                    filename=info.filename,
                    declared=info.ctype,
                    data=data,
                    inline=info.disposition != "attachment",
                )
            )
        return out

    def html(self, body: TextBody) -> HtmlScan:
        return self._scans[body.index]

    @cached_property
    def _scans(self) -> dict[int, HtmlScan]:
        return {b.index: scan(b.source) for b in self.bodies if b.html}

    def texts(self) -> list[tuple[str, str]]:
        """(where, text) for the subject and each body as its reader sees it."""
        return self._texts

    @cached_property
    def _texts(self) -> list[tuple[str, str]]:
        out = [("subject", self.subject)]
        for body in self.bodies:
            out.append((body.where, self.html(body).text if body.html else body.source))
        return out


@dataclass(frozen=True, slots=True)
class PartInfo:
    """A part's MIME headers, read once: the ``email`` package parses them anew on
    every access, which was most of the filter stage's cost on small messages."""

    ctype: str
    disposition: str | None
    filename: str
    multipart: bool
    body: bool

    @classmethod
    def of(cls, part: Message) -> PartInfo:
        filename = _filename(part)
        disposition = part.get_content_disposition()
        multipart = part.is_multipart()
        body = (
            not multipart and shown_as_text(part) and disposition != "attachment" and not filename
        )
        return cls(part.get_content_type(), disposition, filename, multipart, body)


def is_body(part: Message) -> bool:
    """A text part shown as the message itself, not offered as a file."""
    return PartInfo.of(part).body


def part_text(part: Message) -> str:
    """The part's text in the first decoding a mail client would use."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return next(text_decodings(payload, part.get_content_charset()))[0]
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:  # a malformed RFC 2231 parameter
        name = None
    return " ".join(decode_header_text(name).split()) if name else ""
