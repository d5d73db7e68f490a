"""Carrying out ``strip`` and ``redact`` on a message about to be delivered.

``reject`` and ``quarantine`` decide a message's fate and are the pipeline's
business; ``strip`` and ``redact`` change what is delivered.  When a message is
delivered, every strip and redact hit is carried out, not only the winning
action's: a message with a forbidden attachment *and* a redactable link has the
attachment removed and the link redacted.

Runs before the message is tokenized, so nothing added here (a file name in a
note, say) can carry a real address to the recipient.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from email.message import EmailMessage, Message

from relay.filters.base import Action, Hit, HtmlStripping, Matcher, Redacting, Verdict
from relay.filters.html import redact as redact_html
from relay.filters.spans import replace_spans
from relay.filters.view import is_body, part_text
from relay.message.parse import header_text
from relay.message.tokenizer import set_header, set_part_text

IMAGE_NOTE = "[image removed]"


def apply(message: EmailMessage, verdict: Verdict, *, marketplace: str) -> list[str]:
    """Strip and redact in place; returns what was done, one line per change."""
    done = _strip(message, verdict.acting(Action.STRIP), marketplace)
    done += _redact(message, verdict.acting(Action.REDACT), verdict.redact_marker)
    return done


def _strip(message: EmailMessage, hits: list[Hit], marketplace: str) -> list[str]:
    if not hits:
        return []
    parts = list(message.walk())
    noted: dict[int, Hit] = {}
    for hit in hits:
        if hit.finding.part is not None and 0 <= hit.finding.part < len(parts):
            noted.setdefault(hit.finding.part, hit)
    strippers = [m for m in _unique([h.rule.matcher for h in hits]) if isinstance(m, HtmlStripping)]
    done, cids = _strip_html(parts, strippers)
    parents = _parents(message)
    for index, part in enumerate(parts):  # the inline images removed tags showed: no note
        if index not in noted and str(part.get("Content-ID", "")).strip().strip("<>") in cids:
            payload = parents[id(part)].get_payload() if id(part) in parents else None
            if isinstance(payload, list) and len(payload) > 1:
                payload.remove(part)
                done.append("removed the linked image's inline part")
    for index, hit in sorted(noted.items()):
        label = hit.where or "a part"
        note = (
            f"[{marketplace} removed {label} from this message:"
            f" {hit.rule.description or hit.detail}]\n"
        )
        _replace(message, parents, parts[index], note)
        done.append(f"removed {label} (rule {hit.rule_id})")
    return done


def _strip_html(
    parts: Sequence[Message], strippers: Sequence[HtmlStripping]
) -> tuple[list[str], set[str]]:
    """Strip elements from every HTML body; returns what was done and the Content-IDs
    of the inline parts the removed elements showed."""
    done: list[str] = []
    cids: set[str] = set()
    for part in parts:
        if not strippers or not (is_body(part) and part.get_content_subtype() == "html"):
            continue
        assert isinstance(part, EmailMessage)
        source = new = part_text(part)
        for stripper in strippers:
            new, found = stripper.strip_html(new, html.escape(IMAGE_NOTE))
            cids |= found
        if new != source:
            set_part_text(part, new)
            done.append("linked image removed from the HTML body")
    return done, cids


def _parents(message: Message) -> dict[int, Message]:
    out: dict[int, Message] = {}
    for part in message.walk():
        if part.is_multipart():
            payload = part.get_payload()
            assert isinstance(payload, list)
            for child in payload:
                out[id(child)] = part
    return out


def _replace(message: EmailMessage, parents: dict[int, Message], part: Message, note: str) -> None:
    """Put a short text note where ``part`` was."""
    parent = parents.get(id(part))
    if parent is None:  # the message itself is the offending part
        assert part is message
        for name in [n for n in message if n.lower().startswith("content-")]:
            del message[name]
        message.set_content(note, charset="utf-8")
        return
    replacement = EmailMessage()
    replacement.set_content(note, charset="utf-8", disposition="inline")
    del replacement["MIME-Version"]
    payload = parent.get_payload()
    assert isinstance(payload, list)
    payload[payload.index(part)] = replacement


def _redact(message: EmailMessage, hits: list[Hit], marker: str) -> list[str]:
    redactors = [m for m in _unique([h.rule.matcher for h in hits]) if isinstance(m, Redacting)]
    if not redactors:
        return []

    def finder(where: str) -> Callable[[str], list[tuple[int, int]]]:
        def spans(text: str) -> list[tuple[int, int]]:
            return [span for r in redactors for span in r.spans(text, where)]

        return spans

    done: list[str] = []
    if any(k.lower() == "subject" for k, _v in message.raw_items()):
        subject = header_text(message, "Subject")
        found = finder("subject")(subject)
        if found:
            del message["Subject"]
            set_header(message, "Subject", replace_spans(subject, found, marker))
            done.append("redacted the subject")
    for part in message.walk():
        if not is_body(part):
            continue
        assert isinstance(part, EmailMessage)
        source = part_text(part)
        new: str | None
        if part.get_content_subtype() == "html":
            new = redact_html(source, finder("HTML body"), marker)
        else:
            found = finder("text body")(source)
            new = replace_spans(source, found, marker) if found else None
        if new is not None:
            subtype = None if part.get_content_maintype() == "text" else "plain"
            set_part_text(part, new, subtype=subtype)
            done.append(f"redacted the {part.get_content_subtype()} body")
    return done


def _unique(items: list[Matcher]) -> list[Matcher]:
    out: list[Matcher] = []
    for item in items:
        if not any(item is seen for seen in out):
            out.append(item)
    return out
