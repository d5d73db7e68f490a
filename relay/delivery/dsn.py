"""Reading delivery status notifications that come back to a VERP address (RFC 3464).

The VERP token already says which delivery the DSN is about, so we only need the
verdict: a permanent failure (``Action: failed`` / status 5.x.x) or a delay.
Bounces that are not RFC 3464 reports (older MTAs send plain text) are read for
an enhanced status code; anything else (an out-of-office reply that went to the
return path, say) is not a verdict at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_string
from email.message import EmailMessage, Message

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class DsnVerdict:
    permanent: bool
    status: str
    diagnostic: str


def read_dsn(msg: EmailMessage) -> DsnVerdict | None:
    """The verdict of a bounce, or None if ``msg`` is not one."""
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            verdict = _from_report(part)
            if verdict is not None:
                return verdict
    if msg.get_content_type() == "multipart/report" or _looks_like_bounce(msg):
        text = _plain_text(msg)
        match = _STATUS_RE.search(text)
        if match:
            status = match.group(0)
            if status.startswith("2"):
                return None
            return DsnVerdict(status.startswith("5"), status, "")
    return None


def _from_report(part: Message) -> DsnVerdict | None:
    payload = part.get_payload()
    blocks: list[Message] = []
    if isinstance(payload, list):
        blocks = [b for b in payload if isinstance(b, Message)]
    elif isinstance(payload, str):
        blocks = [message_from_string(chunk) for chunk in re.split(r"\r?\n\r?\n", payload)]
    for block in blocks:
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip()
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        if not action and not status:
            continue
        if action in ("delivered", "relayed", "expanded"):
            return None
        permanent = action == "failed" or status.startswith("5")
        return DsnVerdict(permanent, status or action, diagnostic)
    return None


def _looks_like_bounce(msg: EmailMessage) -> bool:
    subject = str(msg.get("Subject", "")).lower()
    sender = str(msg.get("From", "")).lower()
    return any(
        w in subject for w in ("undeliver", "delivery status", "returned mail", "failure")
    ) or ("mailer-daemon" in sender or "postmaster" in sender)


def _plain_text(msg: EmailMessage) -> str:
    chunks = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                chunks.append(payload.decode("utf-8", "replace"))
    return "\n".join(chunks)
