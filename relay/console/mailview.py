"""A message as a moderator may look at it: as text, never as a page or a file.

A held message is an attacker's until proven otherwise.  ``preview`` reads the
copy as received with the relay's own parser (``relay.message.parse``) and the
filters' own view of it (``relay.filters.MessageView``), so that the moderator
sees what the rules saw: the headers decoded to text, each text body, each HTML
body as its markup (shown escaped, never rendered), and each attachment with
the type libmagic gives its bytes (``relay.filters.kinds.attachments.detect``,
as the attachment rules see it) and its size.  Nothing here is opened, linked
or rendered; the templates escape every string.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.core.refusals import Refused
from relay.filters import MessageView, Role
from relay.filters.kinds.attachments import detect
from relay.message.parse import header_text, parse

NO_HOST = "\x00"
"""The hostname the preview parses as: no trace header can name it, so a copy the
relay itself wrote (a delivered one, the rule tester's) is not taken for a loop,
and no count of hops is one: a preview accepts nothing, it only shows."""

MAX_SHOWN = 200_000
"""Characters of one body shown; the rest is cut (the page says so)."""


@dataclass(frozen=True, slots=True)
class Body:
    html: bool
    text: str
    cut: bool
    """Longer than ``MAX_SHOWN``: only its start is shown."""


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    filename: str
    declared: str
    """The Content-Type the sender declared."""
    detected: str
    """What libmagic says the bytes are."""
    size: int
    inline: bool
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Preview:
    subject: str
    sender: str
    to: str
    date: str
    bodies: tuple[Body, ...]
    attachments: tuple[AttachmentInfo, ...]
    unreadable: str = ""
    """Why the message could not be taken apart ("" when it could)."""


def preview(raw: bytes, *, role: Role) -> Preview:
    """The message in ``raw`` as text; ``role`` is the sender's side (which rules'
    view of it: the bodies and attachments are the same for either)."""
    try:
        parsed = parse(raw, hostname=NO_HOST, max_hops=10**9)
    except Refused as exc:
        return Preview("", "", "", "", (), (), unreadable=str(exc))
    msg = parsed.message
    view = MessageView(msg, role)
    bodies = tuple(
        Body(b.html, b.source[:MAX_SHOWN], len(b.source) > MAX_SHOWN) for b in view.bodies
    )
    attachments = []
    for a in view.attachments:
        found = detect(a.data)
        attachments.append(
            AttachmentInfo(
                filename=a.filename,
                declared=a.declared,
                detected=found.mime,
                size=len(a.data),
                inline=a.inline,
                problem=found.problem,
            )
        )
    return Preview(
        subject=parsed.subject,
        sender=header_text(msg, "From"),
        to=header_text(msg, "To"),
        date=header_text(msg, "Date"),
        bodies=bodies,
        attachments=tuple(attachments),
    )
