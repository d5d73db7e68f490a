"""Filter rules end to end (docs/filters.md): real SMTP in, the sink, notices, the archive.

Every test sends mail to a running relay and looks at the three places a rule's decision
shows: what the recipient got at the sink, what the sender got back as a notice and what
the archive recorded (status and rule hits, as ``relay archive show --json`` prints them).
Rules are written to the test config's rules file and loaded with ``relay.reload_rules()``.
"""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import unicodedata
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from relay.app import Relay
from relay.core.config import RelayConfig
from relay.filters.html import scan
from relay.storage import archive
from relay.storage.models import Delivery, Direction, Message, MessageStatus
from tests import filegen
from tests.helpers import Parties, Sink, build, cli, send, wait_idle, wait_until
from tests.helpers import config_file as write_config_file

SHIPPED_RULES = Path(__file__).resolve().parent.parent / "config" / "filters.yaml"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


# --- rules, parties, messages ---------------------------------------------------------


def with_rules(relay: Relay, config: RelayConfig, yaml_text: str) -> None:
    """Write ``yaml_text`` as the relay's rules file and load it."""
    config.filters.rules.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    assert relay.reload_rules()


def with_shipped_rules(relay: Relay, config: RelayConfig) -> None:
    shutil.copyfile(SHIPPED_RULES, config.filters.rules)
    assert relay.reload_rules()


@dataclass(frozen=True)
class Leg:
    """One direction of a conversation: who sends, the token written to, who receives."""

    sender: str
    token: str
    recipient: str


def seller_to_buyer(parties: Parties) -> Leg:
    return Leg(parties.seller, parties.buyer_token, parties.buyer)


def buyer_to_seller(parties: Parties) -> Leg:
    return Leg(parties.buyer, parties.seller_token, parties.seller)


@dataclass
class Attach:
    data: bytes
    filename: str
    content_type: str

    def add_to(self, msg: EmailMessage) -> None:
        maintype, subtype = self.content_type.split("/")
        msg.add_attachment(self.data, maintype, subtype, filename=self.filename)


def mail(
    leg: Leg,
    *,
    subject: str = "About your order",
    text: str = "Thank you for your order. It ships tomorrow.\n",
    html: str | None = None,
    cte: str | None = None,
    headers: dict[str, str] | None = None,
    attachments: list[Attach] | None = None,
    related: list[tuple[bytes, str, str]] | None = None,
) -> EmailMessage:
    """A message on ``leg``: a text body (with ``cte`` if given), optionally an HTML
    alternative with ``related`` (data, subtype, cid) images, and attachments."""
    msg = build(frm=leg.sender, to=leg.token, subject=subject, body="x", headers=headers)
    if cte is None:
        msg.set_content(text)
    else:
        msg.set_content(text, cte=cte)
    if html is not None:
        msg.add_alternative(html, subtype="html")
        payload = msg.get_payload()
        assert isinstance(payload, list)
        html_part = payload[-1]
        assert isinstance(html_part, EmailMessage)
        for data, subtype, cid in related or []:
            html_part.add_related(data, "image", subtype, cid=f"<{cid}>")
    for item in attachments or []:
        item.add_to(msg)
    return msg


async def send_on(relay: Relay, leg: Leg, msg: EmailMessage | bytes) -> None:
    await send(relay, msg, sender=leg.sender, recipients=[leg.token])


# --- what happened: sink, notices, archive --------------------------------------------


def flat(text: str) -> str:
    return " ".join(text.split())


def originals(relay: Relay) -> list[Message]:
    """The archived messages that are not notices, oldest first."""

    def run(s: Session) -> list[Message]:
        query = select(Message).where(Message.direction != Direction.NOTICE)
        return list(s.exec(query.order_by(col(Message.id))).all())

    return relay.db.call(run)


def the_message(relay: Relay) -> Message:
    (message,) = originals(relay)
    return message


def detail(relay: Relay, message_id: int | None) -> dict[str, Any]:
    """What ``relay archive show ID --json`` prints."""
    assert message_id is not None
    found = relay.db.call(archive.message_detail, message_id)
    assert found is not None
    return found


def hits(relay: Relay, message_id: int | None) -> list[dict[str, Any]]:
    hit_list: list[dict[str, Any]] = detail(relay, message_id)["rule_hits"]
    return hit_list


def deliveries(relay: Relay, message_id: int | None) -> list[Delivery]:
    return relay.db.call(
        lambda s: list(s.exec(select(Delivery).where(Delivery.message_id == message_id)).all())
    )


def status(relay: Relay, message_id: int | None) -> str:
    status_value: str = detail(relay, message_id)["status"]
    return status_value


async def delivered(relay: Relay, sink: Sink, leg: Leg) -> EmailMessage:
    """The one message the recipient got; its archived status becomes ``delivered``."""
    await wait_until(lambda: len(sink.to(leg.recipient)) >= 1)
    (got,) = sink.to(leg.recipient)
    assert got.mail_from != ""
    message = the_message(relay)
    await wait_until(lambda: status(relay, message.id) == MessageStatus.DELIVERED)
    assert sink.to(leg.sender) == []  # no notice
    return got.message


async def delivered_unchanged(relay: Relay, sink: Sink, leg: Leg, text: str) -> None:
    """The message sent on ``leg`` arrived with its text as written, and hit no rule."""
    out = await delivered(relay, sink, leg)
    assert text_bodies(out)[0] == text
    assert hits(relay, the_message(relay).id) == []


async def notice_for(sink: Sink, leg: Leg, count: int = 1) -> str:
    """The text of the ``count``-th notice the sender got (null envelope sender)."""
    await wait_until(lambda: len(sink.to(leg.sender)) >= count)
    notice = sink.to(leg.sender)[count - 1]
    assert notice.mail_from == ""
    out = notice.message
    assert out["Auto-Submitted"] == "auto-replied"
    return flat(out.get_content())


async def rejected(relay: Relay, sink: Sink, leg: Leg, notice_text: str) -> Message:
    """Refused: the sender's notice quotes the rule, nothing ever goes to the recipient."""
    await wait_until(lambda: bool(sink.to(leg.sender) or sink.to(leg.recipient)))
    assert sink.to(leg.recipient) == [], "delivered, not rejected"
    text = await notice_for(sink, leg)
    assert "was not delivered" in text
    assert flat(notice_text) in text
    message = the_message(relay)
    assert message.status is MessageStatus.REJECTED
    assert deliveries(relay, message.id) == []
    assert sink.to(leg.recipient) == []
    return message


def hit_summary(relay: Relay, message_id: int | None) -> set[tuple[str, str]]:
    return {(h["rule_id"], h["action"]) for h in hits(relay, message_id)}


def text_bodies(msg: EmailMessage) -> list[str]:
    out: list[str] = []
    for part in msg.walk():
        if part.get_content_maintype() == "text" and not part.get_filename():
            assert isinstance(part, EmailMessage)
            out.append(part.get_content().replace("\r\n", "\n"))
    return out


def files(msg: EmailMessage) -> dict[str, bytes]:
    """Attachment file name → decoded bytes."""
    out: dict[str, bytes] = {}
    for part in msg.walk():
        name = part.get_filename()
        if name:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out[name] = payload
    return out


def everything(msg: EmailMessage) -> str:
    """Subject and every decoded text part: all the recipient can read."""
    return "\n".join([str(msg["Subject"]), *text_bodies(msg)])


def scan_text(html: str) -> str:
    """The text a mail client shows for ``html``."""
    return scan(html).text


def notes(msg: EmailMessage, marketplace: str) -> list[str]:
    return [t for t in text_bodies(msg) if t.startswith(f"[{marketplace} removed ")]


# --- the command line, as an admin runs it ------------------------------------------


@pytest.fixture
def config_file(config: RelayConfig, tmp_path: Path) -> Path:
    """The test relay's configuration as a file for the ``relay`` command (JSON is YAML)."""
    return write_config_file(config, tmp_path / "relay.yaml")


# --- 1. every match kind hits ---------------------------------------------------------


@dataclass
class KindCase:
    match: str
    msg: dict[str, Any]
    where: str
    detail: str


KIND_CASES = {
    "keywords": KindCase(
        "{keywords: {words: [giveaway]}}",
        {"text": "Join our giveaway this week.\n"},
        "text body",
        'keyword "giveaway"',
    ),
    "regex": KindCase(
        r"{regex: {patterns: ['\bwhats\s*app\b'], ignore_case: true}}",
        {"subject": "Write me on Whats App"},
        "subject",
        "Whats App",
    ),
    "links": KindCase(
        '{links: {allow: [ups.com, "*.ups.com"]}}',
        {"text": "Order faster at https://evil.example.com/shop\n"},
        "text body",
        "link to evil.example.com",
    ),
    "linked_images": KindCase(
        "{linked_images: {}}",
        {
            "html": '<p>Thanks!</p><a href="https://evil.example.com/">'
            '<img src="https://evil.example.com/logo.png" alt="logo"></a>'
        },
        "HTML body",
        "links to evil.example.com",
    ),
    "header": KindCase(
        "{header: [{name: X-Mailer, pattern: 'Bulk'}]}",
        {"headers": {"X-Mailer": "BulkMailer 3.0"}},
        "header X-Mailer",
        "BulkMailer 3.0",
    ),
    "attachments": KindCase(
        "{attachments: {allow: [pdf]}}",
        {"attachments": [Attach(filegen.zip_archive(), "files.zip", "application/zip")]},
        'attachment "files.zip"',
        "not an allowed type",
    ),
}


@pytest.mark.parametrize("kind", list(KIND_CASES))
async def test_each_match_kind_hits(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties, kind: str
) -> None:
    case = KIND_CASES[kind]
    with_rules(
        relay,
        config,
        f"""\
        rules:
          - id: kind-{kind}
            match: {case.match}
            action: reject
            notice: The {kind} rule refuses this.
        """,
    )
    leg = seller_to_buyer(parties)
    await send_on(relay, leg, mail(leg, **case.msg))
    message = await rejected(relay, sink, leg, f"The {kind} rule refuses this.")
    (hit,) = hits(relay, message.id)
    assert (hit["rule_id"], hit["action"], hit["where"]) == (f"kind-{kind}", "reject", case.where)
    assert case.detail in hit["detail"]


# --- 2. every action ---------------------------------------------------------------


async def test_reject(relay: Relay, config: RelayConfig, sink: Sink, parties: Parties) -> None:
    with_rules(
        relay,
        config,
        """\
        rules:
          - id: no-referrals
            description: Referral programmes
            match: {keywords: [referral code]}
            action: reject
            notice: >-
              Messages to buyers may not promote referral
              programmes.
        """,
    )
    leg = seller_to_buyer(parties)
    await send_on(relay, leg, mail(leg, text="Use my Referral  Code ABC for 5 dollars.\n"))
    message = await rejected(
        relay, sink, leg, "Messages to buyers may not promote referral programmes."
    )
    notice = await notice_for(sink, leg)
    assert "About your order" in notice and parties.buyer_token in notice
    assert parties.buyer not in notice
    info = detail(relay, message.id)
    assert info["status"] == "rejected" and info["status_reason"] == "rule no-referrals"
    assert [(h["rule_id"], h["action"], h["where"]) for h in info["rule_hits"]] == [
        ("no-referrals", "reject", "text body")
    ]
    assert info["delivered_copy"] is None and info["deliveries"] == []


QUARANTINE_RULES = """\
rules:
  - id: bulk-mailer
    description: Sent with a bulk-mail tool
    match: {header: [{name: X-Mailer, pattern: 'Bulk'}]}
    action: quarantine
    notice: Messages sent with bulk-mail tools are not passed on.
  - id: no-phone
    description: Phone numbers
    match: {regex: '\\b\\d{3}-\\d{4}\\b'}
    action: redact
  - id: only-pdf
    description: Only PDF files may be attached
    match: {attachments: {allow: [pdf]}}
    action: strip
"""


async def test_quarantine_then_release_and_reject_from_the_cli(
    relay: Relay, config: RelayConfig, config_file: Path, sink: Sink, parties: Parties
) -> None:
    with_rules(relay, config, QUARANTINE_RULES)
    leg = seller_to_buyer(parties)
    bulk = {"X-Mailer": "BulkMailer 3.0"}
    pdf = filegen.pdf()
    first_msg = mail(
        leg,
        subject="First",
        text="Call 555-1234 today.\n",
        headers=bulk,
        attachments=[
            Attach(pdf, "receipt.pdf", "application/pdf"),
            Attach(filegen.zip_archive(), "photos.zip", "application/zip"),
        ],
    )
    await send_on(relay, leg, first_msg)
    await send_on(relay, leg, mail(leg, subject="Second", text="Hello again.\n", headers=bulk))
    first, second = originals(relay)
    assert [first.status, second.status] == [MessageStatus.QUARANTINED] * 2
    assert hit_summary(relay, first.id) == {
        ("bulk-mailer", "quarantine"),
        ("no-phone", "redact"),
        ("only-pdf", "strip"),
    }
    assert hit_summary(relay, second.id) == {("bulk-mailer", "quarantine")}
    await wait_idle(relay)
    assert sink.messages == []  # nothing delivered, no notice
    assert deliveries(relay, first.id) == [] and deliveries(relay, second.id) == []

    held = await cli(config_file, "quarantine", "list")
    assert [m["id"] for m in held] == [second.id, first.id]
    assert {h["rule_id"] for h in held[0]["rule_hits"]} == {"bulk-mailer"}

    released, refused = await asyncio.gather(
        cli(config_file, "quarantine", "release", str(first.id)),
        cli(config_file, "quarantine", "reject", str(second.id)),
    )
    assert released == {"message_id": first.id, "status": "queued"}
    assert refused == {"message_id": second.id, "status": "rejected"}

    # The released message reaches the buyer, with the redact and strip rules still applied.
    await wait_until(lambda: len(sink.to(leg.recipient)) == 1)
    out = sink.to(leg.recipient)[0].message
    assert out["Subject"] == "First"
    assert text_bodies(out)[0] == "Call [redacted] today.\n"
    assert "555-1234" not in everything(out)
    assert files(out) == {"receipt.pdf": pdf}
    (note,) = notes(out, config.marketplace.name)
    assert 'removed attachment "photos.zip"' in note
    # The rejected one: its sender gets the quarantine rule's notice, the buyer nothing.
    notice = await notice_for(sink, leg)
    assert "Messages sent with bulk-mail tools are not passed on." in notice
    assert "'Second'" in notice
    await wait_until(lambda: status(relay, first.id) == "delivered")
    assert len(sink.to(leg.recipient)) == 1 and len(sink.to(leg.sender)) == 1

    shown_first, shown_second = await asyncio.gather(
        cli(config_file, "archive", "show", str(first.id)),
        cli(config_file, "archive", "show", str(second.id)),
    )
    assert shown_first["status"] == "delivered"
    assert shown_first["status_reason"] == "released from quarantine"
    assert shown_second["status"] == "rejected"
    assert shown_second["status_reason"] == "rule bulk-mailer, by an admin"
    assert shown_second["deliveries"] == []
    assert await cli(config_file, "quarantine", "list") == []


async def test_strip(relay: Relay, config: RelayConfig, sink: Sink, parties: Parties) -> None:
    with_rules(
        relay,
        config,
        """\
        rules:
          - id: only-pdf
            description: Only PDF files may be attached
            applies_to: both
            match: {attachments: {allow: [pdf]}}
            action: strip
        """,
    )
    leg = buyer_to_seller(parties)
    pdf = filegen.pdf()
    msg = mail(
        leg,
        text="Here are the receipt and the photos.\n",
        attachments=[
            Attach(pdf, "receipt.pdf", "application/pdf"),
            Attach(filegen.zip_archive(), "photos.zip", "application/zip"),
        ],
    )
    await send_on(relay, leg, msg)
    out = await delivered(relay, sink, leg)
    assert files(out) == {"receipt.pdf": pdf}  # the ZIP is gone, the PDF untouched
    name = config.marketplace.name
    (note,) = notes(out, name)
    assert flat(note) == (
        f'[{name} removed attachment "photos.zip" from this message:'
        " Only PDF files may be attached]"
    )
    assert text_bodies(out)[0] == "Here are the receipt and the photos.\n"
    (hit,) = hits(relay, the_message(relay).id)
    assert (hit["rule_id"], hit["action"], hit["where"]) == (
        "only-pdf",
        "strip",
        'attachment "photos.zip"',
    )


REDACT_RULES = """\
redact_marker: "[removed]"
rules:
  - id: no-contact
    description: Moving the conversation elsewhere
    match: {keywords: {words: [whatsapp, "call me"]}}
    action: redact
  - id: no-links
    description: Links to other websites
    match: {links: {allow: [marketplace.example.com]}}
    action: redact
"""


async def test_redact(relay: Relay, config: RelayConfig, sink: Sink, parties: Parties) -> None:
    with_rules(relay, config, REDACT_RULES)
    leg = seller_to_buyer(parties)
    msg = mail(
        leg,
        subject="WhatsApp me about your order",
        text="Please call me or use WhatsApp. Shop: https://evil.example.com/shop\n",
        html='<p>Please <b>call me</b> or use WhatsApp.</p><p><a href="https://evil.example.com'
        '/shop">our shop</a> or <a href="https://marketplace.example.com/s/1">here</a></p>',
    )
    await send_on(relay, leg, msg)
    out = await delivered(relay, sink, leg)
    assert out["Subject"] == "[removed] me about your order"
    text, html = text_bodies(out)
    assert text == "Please [removed] or use [removed]. Shop: [removed]\n"
    assert "<p>Please <b>[removed]</b> or use [removed].</p>" in html
    assert "<a>our shop</a>" in html  # the redacted href attribute is gone, the words stay
    assert '<a href="https://marketplace.example.com/s/1">here</a>' in html
    seen = everything(out).lower()
    assert "whatsapp" not in seen and "call me" not in seen and "evil.example" not in seen
    assert b"evil.example" not in sink.to(leg.recipient)[0].data
    found = {(h["rule_id"], h["where"]) for h in hits(relay, the_message(relay).id)}
    assert found == {
        ("no-contact", "subject"),
        ("no-contact", "text body"),
        ("no-contact", "HTML body"),
        ("no-links", "text body"),
        ("no-links", "HTML body"),
    }


async def test_flag(relay: Relay, config: RelayConfig, sink: Sink, parties: Parties) -> None:
    with_rules(
        relay,
        config,
        """\
        rules:
          - id: watch-refunds
            description: Refund talk, for the support team to look at
            applies_to: buyer
            match: {keywords: [refund]}
            action: flag
        """,
    )
    leg = buyer_to_seller(parties)
    text = "I would like a refund for the broken vase.\n"
    html = "<p>I would like a <b>refund</b> for the broken vase.</p>"
    await send_on(relay, leg, mail(leg, subject="Refund please", text=text, html=html))
    out = await delivered(relay, sink, leg)
    assert out["Subject"] == "Refund please"
    assert text_bodies(out) == [text, html + "\n"]
    message = the_message(relay)
    assert {(h["rule_id"], h["action"], h["where"]) for h in hits(relay, message.id)} == {
        ("watch-refunds", "flag", "subject"),
        ("watch-refunds", "flag", "text body"),
        ("watch-refunds", "flag", "HTML body"),
    }
    assert detail(relay, message.id)["status_reason"] == ""


# --- 3. the most severe action wins --------------------------------------------------


async def test_most_severe_wins_and_every_hit_is_recorded(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_rules(
        relay,
        config,
        r"""
        rules:
          - id: note-order
            match: {keywords: [order]}
            action: flag
          - id: hide-phone
            match: {regex: '\b\d{3}-\d{4}\b'}
            action: redact
          - id: no-whatsapp
            match: {regex: '\bwhats\s*app\b'}
            action: reject
            notice: Please keep the conversation on the marketplace.
        """,
    )
    leg = seller_to_buyer(parties)
    await send_on(relay, leg, mail(leg, text="About your order: WhatsApp me at 555-1234.\n"))
    message = await rejected(relay, sink, leg, "Please keep the conversation on the marketplace.")
    assert detail(relay, message.id)["status_reason"] == "rule no-whatsapp"
    assert hit_summary(relay, message.id) == {
        ("note-order", "flag"),
        ("hide-phone", "redact"),
        ("no-whatsapp", "reject"),
    }


# --- 4. attachments, typed by their content ------------------------------------------

ATTACHMENT_RULES = """\
rules:
  - id: attachment-types
    description: Only PDF, Word documents, images and plain text may be attached
    applies_to: both
    match: {attachments: {allow: [pdf, word, image, text]}}
    action: strip
"""

ALLOWED = {
    "pdf": Attach(filegen.pdf(), "invoice.pdf", "application/pdf"),
    "docx": Attach(filegen.docx(), "letter.docx", DOCX_TYPE),
    "doc": Attach(filegen.doc(), "letter.doc", "application/msword"),
    "jpeg": Attach(filegen.jpeg(), "photo.jpg", "image/jpeg"),
    "png": Attach(filegen.png(), "photo.png", "image/png"),
    "gif": Attach(filegen.gif(), "photo.gif", "image/gif"),
    "text": Attach(filegen.text(), "notes.txt", "text/plain"),
}


@pytest.mark.parametrize("name", list(ALLOWED))
async def test_allowed_attachment_passes_untouched(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties, name: str
) -> None:
    with_rules(relay, config, ATTACHMENT_RULES)
    item = ALLOWED[name]
    leg = seller_to_buyer(parties)
    await send_on(relay, leg, mail(leg, attachments=[item]))
    out = await delivered(relay, sink, leg)
    assert files(out) == {item.filename: item.data}
    (attached,) = out.iter_attachments()
    assert attached.get_content_type() == item.content_type
    assert notes(out, config.marketplace.name) == []
    assert hits(relay, the_message(relay).id) == []


STRIPPED = {
    "elf-named-pdf": (Attach(filegen.elf(), "invoice.pdf", "application/pdf"), "disguised"),
    "zip-named-pdf": (
        Attach(filegen.zip_archive(), "invoice.pdf", "application/pdf"),
        "disguised",
    ),
    "zip-named-docx": (Attach(filegen.zip_archive(), "report.docx", DOCX_TYPE), "disguised"),
    "pdf-declared-text": (Attach(filegen.pdf(), "document.pdf", "text/plain"), "disguised"),
    "pe-named-jpg": (Attach(filegen.pe_exe(), "photo.jpg", "image/jpeg"), "disguised"),
    "docm": (
        Attach(filegen.docm(), "report.docm", "application/vnd.ms-word.document.macroEnabled.12"),
        "macros",
    ),
    "doc-with-macros": (
        Attach(filegen.doc(macros=True), "report.doc", "application/msword"),
        "macros",
    ),
    "zip": (Attach(filegen.zip_archive(), "files.zip", "application/zip"), "not an allowed type"),
    "html": (Attach(filegen.html_file(), "page.html", "text/html"), "not an allowed type"),
}


@pytest.mark.parametrize("name", list(STRIPPED))
async def test_refused_attachment_is_stripped(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties, name: str
) -> None:
    with_rules(relay, config, ATTACHMENT_RULES)
    item, why = STRIPPED[name]
    keep = ALLOWED["png"]
    leg = seller_to_buyer(parties)
    text = "The documents you asked for.\n"
    await send_on(relay, leg, mail(leg, text=text, attachments=[keep, item]))
    out = await delivered(relay, sink, leg)
    assert files(out) == {keep.filename: keep.data}
    assert not any(
        part.get_payload(decode=True) == item.data for part in out.walk() if not part.is_multipart()
    )
    (note,) = notes(out, config.marketplace.name)
    assert f'removed attachment "{item.filename}"' in note
    assert text_bodies(out)[0] == text
    (hit,) = hits(relay, the_message(relay).id)
    assert (hit["rule_id"], hit["action"], hit["where"]) == (
        "attachment-types",
        "strip",
        f'attachment "{item.filename}"',
    )
    assert why in hit["detail"]


async def test_inline_image_of_an_html_body_is_allowed(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_rules(relay, config, ATTACHMENT_RULES)
    leg = seller_to_buyer(parties)
    png = filegen.png()
    html = '<p>Your engraving will look like this:</p><img src="cid:preview@shop" alt="preview">'
    msg = mail(leg, html=html, related=[(png, "png", "preview@shop")])
    await send_on(relay, leg, msg)
    out = await delivered(relay, sink, leg)
    (image,) = [p for p in out.walk() if p.get_content_maintype() == "image"]
    assert image.get_payload(decode=True) == png
    assert image["Content-ID"] == "<preview@shop>"
    assert 'src="cid:preview@shop"' in text_bodies(out)[1]
    assert hits(relay, the_message(relay).id) == []


@pytest.mark.parametrize(("total", "kept"), [(59_999, True), (60_000, False), (60_001, False)])
async def test_total_size_limit(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties, total: int, kept: bool
) -> None:
    with_rules(
        relay,
        config,
        """\
        rules:
          - id: attachment-size
            description: Attachments must total under 60 kB
            applies_to: both
            match: {attachments: {max_total_size: 60000}}
            action: strip
        """,
    )
    first, second = filegen.pdf_of_size(30_000), filegen.pdf_of_size(total - 30_000)
    leg = buyer_to_seller(parties)
    msg = mail(
        leg,
        attachments=[
            Attach(first, "part1.pdf", "application/pdf"),
            Attach(second, "part2.pdf", "application/pdf"),
        ],
    )
    await send_on(relay, leg, msg)
    out = await delivered(relay, sink, leg)
    found = hits(relay, the_message(relay).id)
    if kept:
        assert files(out) == {"part1.pdf": first, "part2.pdf": second}
        assert found == [] and notes(out, config.marketplace.name) == []
    else:
        # The part that takes the total to or over the limit goes; the first stays.
        assert files(out) == {"part1.pdf": first}
        (note,) = notes(out, config.marketplace.name)
        assert 'removed attachment "part2.pdf"' in note
        ((rule_id, where),) = [(h["rule_id"], h["where"]) for h in found]
        assert (rule_id, where) == ("attachment-size", 'attachment "part2.pdf"')


async def test_shipped_7mb_limit(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_shipped_rules(relay, config)
    leg = buyer_to_seller(parties)
    half = filegen.pdf_of_size(3_500_000)
    under = filegen.pdf_of_size(3_499_999)  # 6,999,999 in all
    over = filegen.pdf_of_size(3_500_001)  # 7,000,001 in all
    for subject, last in (("just under", under), ("just over", over)):
        msg = mail(
            leg,
            subject=subject,
            attachments=[
                Attach(half, "scan1.pdf", "application/pdf"),
                Attach(last, "scan2.pdf", "application/pdf"),
            ],
        )
        data = msg.as_bytes()
        # Base64 makes ~7 MB of files ~9.6 MB of message: the SMTP size limit must allow it.
        assert len(data) < config.smtp.max_message_size
        await send_on(relay, leg, data)
    await wait_until(lambda: len(sink.to(leg.recipient)) == 2, timeout=30)
    by_subject = {m.message["Subject"]: m.message for m in sink.to(leg.recipient)}
    assert files(by_subject["just under"]) == {"scan1.pdf": half, "scan2.pdf": under}
    assert files(by_subject["just over"]) == {"scan1.pdf": half}
    (note,) = notes(by_subject["just over"], config.marketplace.name)
    assert 'removed attachment "scan2.pdf"' in note and "under 7 MB" in note
    first, second = originals(relay)
    assert hits(relay, first.id) == []
    assert [(h["rule_id"], h["action"]) for h in hits(relay, second.id)] == [
        ("attachment-size", "strip")
    ]


# --- 5. Unicode keywords ---------------------------------------------------------------

UNICODE_RULES = """\
rules:
  - id: vi-folded
    match: {keywords: {words: ["khuyến mãi"], fold_diacritics: true}}
    action: flag
  - id: vi-exact
    match: {keywords: {words: ["khuyến mãi"], fold_diacritics: false}}
    action: flag
  - id: tagalog
    match: {keywords: [diskwento, i-promote]}
    action: flag
  - id: sale
    match: {keywords: [sale]}
    action: flag
  - id: promo
    match: {keywords: [promo]}
    action: flag
"""

KM = "khuyến mãi"
KM_NFD = unicodedata.normalize("NFD", KM)
assert KM_NFD != KM
FULL_WIDTH_PROMO = "\uff50\uff52\uff4f\uff4d\uff4f"
assert unicodedata.normalize("NFKC", FULL_WIDTH_PROMO) == "promo"


@dataclass
class UnicodeCase:
    text: str = "Cảm ơn bạn đã đặt hàng.\n"
    subject: str = "Đơn hàng của bạn"
    cte: str | None = None
    html: str | None = None
    expected: set[tuple[str, str]] = field(default_factory=set)
    """(rule id, where) of every hit."""


UNICODE_CASES = {
    "upper-case": UnicodeCase(
        subject="KHUYẾN MÃI LỚN",
        expected={("vi-folded", "subject"), ("vi-exact", "subject")},
    ),
    "no-diacritics": UnicodeCase(
        text="Chuong trinh khuyen mai tuan nay.\n", expected={("vi-folded", "text body")}
    ),
    "decomposed": UnicodeCase(
        text=f"Chương trình {KM_NFD} tuần này.\n",
        expected={("vi-folded", "text body"), ("vi-exact", "text body")},
    ),
    "zero-width-space": UnicodeCase(
        text="Chương trình khuy\u200bến mãi tuần này.\n",
        expected={("vi-folded", "text body"), ("vi-exact", "text body")},
    ),
    "tagalog-mixed-case": UnicodeCase(
        text="May DiskWento po kami ngayon.\n", expected={("tagalog", "text body")}
    ),
    "tagalog-hyphen": UnicodeCase(
        text="Gusto ko pong I-Promote ang tindahan.\n", expected={("tagalog", "text body")}
    ),
    "word-boundary": UnicodeCase(text="We sell wholesale only.\n"),
    "whole-word": UnicodeCase(text="Big sale today.\n", expected={("sale", "text body")}),
    "full-width": UnicodeCase(
        text=f"Use code {FULL_WIDTH_PROMO} at checkout.\n", expected={("promo", "text body")}
    ),
    "base64": UnicodeCase(
        text=f"Chương trình {KM} tuần này.\n",
        cte="base64",
        expected={("vi-folded", "text body"), ("vi-exact", "text body")},
    ),
    "quoted-printable": UnicodeCase(
        text=f"Chương trình {KM} tuần này.\n",
        cte="quoted-printable",
        expected={("vi-folded", "text body"), ("vi-exact", "text body")},
    ),
    "html-entities": UnicodeCase(
        html="<p>Ch&#432;&#417;ng tr&igrave;nh <b>khuy&#7871;n m&atilde;i</b></p>",
        expected={("vi-folded", "HTML body"), ("vi-exact", "HTML body")},
    ),
}


@pytest.mark.parametrize("name", list(UNICODE_CASES))
async def test_unicode_keywords(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties, name: str
) -> None:
    with_rules(relay, config, UNICODE_RULES)
    case = UNICODE_CASES[name]
    leg = seller_to_buyer(parties)
    msg = mail(leg, subject=case.subject, text=case.text, cte=case.cte, html=case.html)
    if case.cte:
        assert f"Content-Transfer-Encoding: {case.cte}" in msg.as_string()
    await send_on(relay, leg, msg)
    out = await delivered(relay, sink, leg)  # flagged: delivered unchanged
    assert out["Subject"] == case.subject
    assert text_bodies(out)[0] == case.text
    found = {(h["rule_id"], h["where"]) for h in hits(relay, the_message(relay).id)}
    assert found == case.expected


async def test_khuyen_mai_without_diacritic_folding_does_not_match(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_rules(
        relay,
        config,
        """\
        rules:
          - id: vi-exact
            match: {keywords: {words: ["khuyến mãi"], fold_diacritics: false}}
            action: reject
            notice: No promotions.
        """,
    )
    leg = seller_to_buyer(parties)
    await send_on(relay, leg, mail(leg, text="Chuong trinh khuyen mai tuan nay.\n"))
    out = await delivered(relay, sink, leg)
    assert "khuyen mai" in text_bodies(out)[0]
    assert hits(relay, the_message(relay).id) == []


async def test_decomposed_and_zero_width_keywords_are_redacted_whole(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_rules(
        relay,
        config,
        """\
        redact_marker: "[removed]"
        rules:
          - id: vi-promo
            match: {keywords: {words: ["khuyến mãi"], fold_diacritics: true}}
            action: redact
        """,
    )
    leg = seller_to_buyer(parties)
    text = f"A {KM_NFD} B khuy\u200bến mãi C KHUYEN MAI D\n"
    await send_on(relay, leg, mail(leg, text=text))
    out = await delivered(relay, sink, leg)
    assert text_bodies(out)[0] == "A [removed] B [removed] C [removed] D\n"


# --- 6. link evasions ------------------------------------------------------------------

LINK_RULES = """\
rules:
  - id: no-external-links
    description: Links to websites outside the marketplace
    match: {links: {allow: [ups.com, "*.ups.com"]}}
    action: reject
    notice: Messages to buyers may not link to external websites.
"""


@dataclass
class LinkCase:
    text: str
    html: str | None = None
    host: str | None = None
    """The host reported, or None: the link is allowed and the message delivered."""
    where: str = "text body"


LINK_CASES = {
    "upper-case-scheme": LinkCase(
        "Order at HTTP://EVIL.EXAMPLE.COM today\n", host="evil.example.com"
    ),
    "entity-encoded-href": LinkCase(
        "Our shop\n",
        html='<p><a href="h&#116;tp://evil.example.com">Our shop</a></p>',
        host="evil.example.com",
        where="HTML body",
    ),
    "hxxp": LinkCase("See hxxp://evil.example.com/shop\n", host="evil.example.com"),
    "defanged-dot": LinkCase("Find us at evil[.]com\n", host="evil.com"),
    "bare-www": LinkCase("Find us at www.evil.com for more\n", host="www.evil.com"),
    "html-part-only": LinkCase(
        "See our website (link in the HTML version).\n",
        html='<p>See <a href="https://evil.example.com/">our website</a>.</p>',
        host="evil.example.com",
        where="HTML body",
    ),
    "userinfo": LinkCase("Track it at https://ups.com@evil.com/\n", host="evil.com"),
    "allowed-carrier": LinkCase("Track it at https://www.ups.com/track?n=1\n"),
    "href-scheme-without-slashes": LinkCase(
        "Our shop\n",
        html='<p><a href="https:evil.com">Our shop</a></p>',
        host="evil.com",
        where="HTML body",
    ),
}


@pytest.mark.parametrize("name", list(LINK_CASES))
async def test_link_evasions(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties, name: str
) -> None:
    with_rules(relay, config, LINK_RULES)
    case = LINK_CASES[name]
    leg = seller_to_buyer(parties)
    await send_on(relay, leg, mail(leg, text=case.text, html=case.html))
    if case.host is None:
        await delivered_unchanged(relay, sink, leg, case.text)
        return
    message = await rejected(
        relay, sink, leg, "Messages to buyers may not link to external websites."
    )
    found = {(h["rule_id"], h["where"], h["detail"]) for h in hits(relay, message.id)}
    assert ("no-external-links", case.where, f"link to {case.host}") in found


# --- 7. the shipped default rules --------------------------------------------------------


async def test_default_rules_reject_a_seller_promotion(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_shipped_rules(relay, config)
    leg = seller_to_buyer(parties)
    msg = mail(leg, subject="Quà tặng", text="Mã giảm giá cho lần mua tiếp theo: HANOI10\n")
    await send_on(relay, leg, msg)
    message = await rejected(
        relay, sink, leg, "Messages to buyers may not contain marketing or promotions."
    )
    assert [(h["rule_id"], h["action"]) for h in hits(relay, message.id)] == [
        ("no-marketing", "reject")
    ]


async def test_default_rules_deliver_a_ups_tracking_link(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_shipped_rules(relay, config)
    leg = seller_to_buyer(parties)
    text = "Your parcel is on its way: https://www.ups.com/track?tracknum=1Z999AA10123456784\n"
    await send_on(relay, leg, mail(leg, subject="Shipped", text=text))
    await delivered_unchanged(relay, sink, leg, text)


LOGO_HTML = '<p>Thank you!</p><a href="{href}"><img src="cid:logo@shop" alt=""></a>'


async def seller_sends_linked_logo(
    relay: Relay, config: RelayConfig, parties: Parties, href: str
) -> Leg:
    """Under the shipped rules, the seller sends an HTML message whose logo links to ``href``."""
    with_shipped_rules(relay, config)
    leg = seller_to_buyer(parties)
    html = LOGO_HTML.format(href=href)
    await send_on(relay, leg, mail(leg, html=html, related=[(filegen.png(), "png", "logo@shop")]))
    return leg


async def test_default_rules_strip_a_linked_logo(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    # The logo links to the seller's page on the marketplace: no-external-links allows
    # that host, but no-linked-logo's allow-list is empty, so any linked image is
    # stripped; the image part it showed goes too, and the message is delivered.
    leg = await seller_sends_linked_logo(
        relay, config, parties, "https://marketplace.example.com/shops/hanoi-crafts"
    )
    out = await delivered(relay, sink, leg)
    html_out = text_bodies(out)[1]
    assert "[image removed]" in html_out and "cid:logo@shop" not in html_out
    assert "<p>Thank you!</p>" in html_out
    # The logo's inline part goes without a note (the HTML body itself was not removed).
    assert not any("removed HTML body" in t for t in text_bodies(out))
    assert not any(p.get_content_maintype() == "image" for p in out.walk())
    assert not any(p["Content-ID"] for p in out.walk())
    assert [(h["rule_id"], h["action"]) for h in hits(relay, the_message(relay).id)] == [
        ("no-linked-logo", "strip")
    ]


async def test_default_rules_reject_a_logo_linking_outside(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    # The same logo linking to the seller's own website hits both no-linked-logo (strip)
    # and no-external-links (reject, for the href): reject is more severe, so nothing is
    # delivered and the sender is told about external links.
    leg = await seller_sends_linked_logo(
        relay, config, parties, "https://hanoi-crafts.example.com/"
    )
    message = await rejected(
        relay, sink, leg, "Messages to buyers may not link to external websites."
    )
    assert hit_summary(relay, message.id) == {
        ("no-linked-logo", "strip"),
        ("no-external-links", "reject"),
    }


async def test_default_rules_let_buyers_write_promotional_words(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_shipped_rules(relay, config)
    leg = buyer_to_seller(parties)
    text = "Do you have a promo code? I saw a flash sale. Mã giảm giá? Mua ngay!\n"
    await send_on(relay, leg, mail(leg, subject="Khuyến mãi?", text=text))
    await delivered_unchanged(relay, sink, leg, text)


async def test_default_rules_strip_a_buyers_exe(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_shipped_rules(relay, config)
    leg = buyer_to_seller(parties)
    exe = Attach(filegen.pe_exe(), "setup.exe", "application/octet-stream")
    await send_on(relay, leg, mail(leg, text="Please install this.\n", attachments=[exe]))
    out = await delivered(relay, sink, leg)
    assert files(out) == {}
    (note,) = notes(out, config.marketplace.name)
    assert 'removed attachment "setup.exe"' in note
    assert text_bodies(out)[0] == "Please install this.\n"
    assert [(h["rule_id"], h["action"]) for h in hits(relay, the_message(relay).id)] == [
        ("attachment-types", "strip")
    ]


# --- redaction and stripping across markup -------------------------------------------


async def test_redact_a_phrase_split_by_inline_markup(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_rules(relay, config, REDACT_RULES)
    leg = seller_to_buyer(parties)
    html = "<p>Please call <b>me</b> or Whats<span></span>App.</p>"
    await send_on(relay, leg, mail(leg, text="Thanks.\n", html=html))
    out = await delivered(relay, sink, leg)
    assert {(h["rule_id"], h["where"]) for h in hits(relay, the_message(relay).id)} == {
        ("no-contact", "HTML body")
    }
    visible = flat(scan_text(text_bodies(out)[1])).lower()
    assert "call me" not in visible and "whatsapp" not in visible


async def test_redact_reaches_image_alt_text(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_rules(relay, config, REDACT_RULES)
    leg = seller_to_buyer(parties)
    html = '<p>Our card:</p><img src="cid:card@shop" alt="WhatsApp 555 1234">'
    msg = mail(leg, text="Thanks.\n", html=html, related=[(filegen.png(), "png", "card@shop")])
    await send_on(relay, leg, msg)
    out = await delivered(relay, sink, leg)
    assert {(h["rule_id"], h["where"]) for h in hits(relay, the_message(relay).id)} == {
        ("no-contact", "HTML body")
    }
    assert "whatsapp" not in text_bodies(out)[1].lower()


async def test_redact_keeps_to_the_places_a_rule_searches(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    with_rules(
        relay,
        config,
        r"""
        rules:
          - id: urgent-subject
            match: {keywords: {words: [urgent], in: [subject]}}
            action: redact
          - id: free-body
            match: {regex: {patterns: ['\bfree\b'], in: [body]}}
            action: redact
        """,
    )
    leg = seller_to_buyer(parties)
    msg = mail(leg, subject="Urgent: free shipping", text="This is urgent. Shipping is free.\n")
    await send_on(relay, leg, msg)
    out = await delivered(relay, sink, leg)
    assert {(h["rule_id"], h["where"]) for h in hits(relay, the_message(relay).id)} == {
        ("urgent-subject", "subject"),
        ("free-body", "text body"),
    }
    assert out["Subject"] == "[redacted]: free shipping"
    assert text_bodies(out)[0] == "This is urgent. Shipping is [redacted].\n"
