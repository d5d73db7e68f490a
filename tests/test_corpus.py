"""Real-world-shaped and malformed messages, sent over SMTP through the relay.

Each file in ``tests/data/corpus`` is written by the buyer (``maria@buyer.example``)
to the seller token (``{{SELLER_TOKEN}}``); the seller is ``shop@seller.example``.
The seller → buyer run swaps the two parties wherever they are spelled in the clear
(files that hide an address in base64, Q-encoding or a soft line break are sent
as they are, which then tests the "other party's address" rule instead).

Every file has a defined outcome ("bad input gets a clear answer"):
delivered with the sender's token in From and no spelling of a real address
anywhere but the recipient's own To, or refused with a clear SMTP reply.  Never
a 451 from an internal error, never a traceback in the log.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message

import aiosmtplib
import pytest

from relay.app import Relay
from tests.helpers import DATA, Parties, Sink, send
from tests.leakcheck import find_leaks

CORPUS = DATA / "corpus"
BUYER = "maria@buyer.example"
SELLER = "shop@seller.example"


@dataclass(frozen=True)
class Case:
    swappable: bool = True
    """Every spelling of the parties' addresses is in the clear (can be swapped)."""
    reply: tuple[int, str] | None = None
    """The SMTP refusal expected (code, enhanced status); None: delivered."""
    same_structure: bool = True
    """The delivered MIME tree has the same content types as the original."""
    subject: str | None = None
    """The Subject the recipient sees (buyer → seller)."""


CASES: dict[str, Case] = {
    "alternative-text-html.eml": Case(subject="Question about my order ORD-1"),
    "nested-mixed-alternative-related.eml": Case(),
    "attachment-pdf-png.eml": Case(),
    "broken-base64.eml": Case(swappable=False),
    "missing-headers.eml": Case(),
    "missing-everything-but-body.eml": Case(),
    "utf8-raw-headers-vietnamese.eml": Case(subject="Xin chào, đơn hàng của tôi"),
    "utf8-raw-headers-tagalog.eml": Case(),
    "long-lines-encoded-and-long-header.eml": Case(swappable=False),
    "rfc2047-encoded-words.eml": Case(swappable=False),
    "rfc2047-malformed-encoded-words.eml": Case(swappable=False),
    "unknown-charset.eml": Case(),
    "forwarded-rfc822.eml": Case(),
    "forwarded-rfc822-base64.eml": Case(swappable=False),
    "html-mailto-entities.eml": Case(),
    "quoted-reply.eml": Case(),
    "outlook-folded-headers.eml": Case(),
    "qp-soft-break-in-address.eml": Case(swappable=False),
    "base64-text-parts.eml": Case(swappable=False),
    "raw-line-over-1000-bytes.eml": Case(reply=(500, "5.5.2")),
    "raw-html-line-over-1000-bytes.eml": Case(reply=(500, "5.5.2")),
    "multipart-without-boundary.eml": Case(same_structure=False),
    "truncated-multipart.eml": Case(),
    "garbage-headers.eml": Case(),
    "provider-trace-headers.eml": Case(),
    "calendar-invite.eml": Case(),
    "text-attachment-with-address-filename.eml": Case(),
    "rfc2231-continuation-filename.eml": Case(swappable=False),
    "duplicate-headers.eml": Case(reply=(550, "5.7.1")),  # two From headers: which one?
    "multipart-report-bounce.eml": Case(),
    "broken-address-headers.eml": Case(),
    "multipart-without-boundary-8bit.eml": Case(same_structure=False),
    "nested-30-levels.eml": Case(),
    "nested-400-levels.eml": Case(reply=(554, "5.6.0")),
}

_PARTY = re.compile(
    rb"(maria|shop)(@|%40|&#0*64;|&#x0*40;|&commat;|=40)(buyer|seller)(\.example)", re.IGNORECASE
)
_OTHER = {b"maria": b"shop", b"shop": b"maria", b"buyer": b"seller", b"seller": b"buyer"}


def _swap_tokens(raw: bytes) -> bytes:
    return (
        raw.replace(b"{{SELLER_TOKEN}}", b"\0")
        .replace(b"{{BUYER_TOKEN}}", b"{{SELLER_TOKEN}}")
        .replace(b"\0", b"{{BUYER_TOKEN}}")
    )


def _like(template: bytes, word: bytes) -> bytes:
    if template.isupper():
        return word.upper()
    return word.capitalize() if template[:1].isupper() else word


def _swap_parties(raw: bytes) -> bytes:
    """maria@buyer.example <-> shop@seller.example, in every spelling the files use."""

    def other(m: re.Match[bytes]) -> bytes:
        local, at, domain, tld = m.groups()
        return (
            _like(local, _OTHER[local.lower()]) + at + _like(domain, _OTHER[domain.lower()]) + tld
        )

    return _PARTY.sub(other, raw)


def load(name: str, direction: str, parties: Parties) -> bytes:
    raw = (CORPUS / name).read_bytes()
    if direction == "seller":
        raw = _swap_tokens(raw)
        if CASES[name].swappable:
            raw = _swap_parties(raw)
        else:  # the seller writes, so the From is the seller's (else: a forged From, 550)
            raw = re.sub(
                rb"(?im)^From:.*(?:\r?\n[ \t].*)*$",
                b"From: Shop <shop@seller.example>",
                raw,
                count=1,
            )
    return raw.replace(b"{{SELLER_TOKEN}}", parties.seller_token.encode()).replace(
        b"{{BUYER_TOKEN}}", parties.buyer_token.encode()
    )


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def structure(msg: Message) -> list[str]:
    return [part.get_content_type() for part in msg.walk()]


def binary_parts(msg: Message) -> list[bytes]:
    """The decoded bytes of every non-text leaf: attachments must arrive intact."""
    found = []
    for part in msg.walk():
        if not part.is_multipart() and part.get_content_maintype() not in ("text", "multipart"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append(payload)
    return found


def relay_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("relay") and (r.exc_info or r.levelno >= logging.ERROR)
    ]


def test_corpus_is_complete() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.eml"))
    assert len(files) >= 15
    assert files == sorted(CASES), "every corpus file needs a Case (and every Case a file)"
    for name in files:
        data = (CORPUS / name).read_bytes()
        if CASES[name].reply is None:
            assert max(len(line) for line in data.splitlines()) <= 998, name


@pytest.mark.parametrize("direction", ["buyer", "seller"])
@pytest.mark.parametrize("name", sorted(CASES))
async def test_corpus_message(
    relay: Relay,
    sink: Sink,
    parties: Parties,
    caplog: pytest.LogCaptureFixture,
    name: str,
    direction: str,
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    case = CASES[name]
    raw = load(name, direction, parties)
    if direction == "buyer":
        sender, sender_token, token, recipient = (
            BUYER,
            parties.buyer_token,
            parties.seller_token,
            SELLER,
        )
    else:
        sender, sender_token, token, recipient = (
            SELLER,
            parties.seller_token,
            parties.buyer_token,
            BUYER,
        )

    if case.reply is not None:
        with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
            await send(relay, raw, sender=sender, recipients=[token])
        assert (exc.value.code, exc.value.message[:5]) == case.reply
        assert len(exc.value.message) > 10  # a text that says what is wrong
        assert sink.messages == []
        assert relay_failures(caplog) == []
        return

    _errors, reply = await send(relay, raw, sender=sender, recipients=[token])
    assert reply.startswith("2.0.0"), reply
    await sink.wait_for(1)
    delivered = [m for m in sink.messages if m.rcpt_tos == [recipient]]
    assert len(delivered) == 1, [m.rcpt_tos for m in sink.messages]
    got = delivered[0]
    assert got.mail_from.startswith("bounce+")

    out = parse(got.data)
    assert [a.addr_spec for a in out["From"].addresses] == [sender_token]
    assert [a.addr_spec for a in out["To"].addresses] == [recipient]
    assert out["Message-ID"].endswith("@marketplace.example.com>")
    assert out["Date"].datetime is not None
    assert find_leaks(got.data, sender) == []
    assert find_leaks(got.data, recipient, except_to=True) == []

    original = parse(raw)
    if case.same_structure:
        assert structure(out) == structure(original)
    assert binary_parts(out) == binary_parts(original)
    if case.subject is not None and direction == "buyer":
        assert out["Subject"] == case.subject
    assert relay_failures(caplog) == []


def test_swap_is_an_involution() -> None:
    for name, case in CASES.items():
        if case.swappable:
            raw = (CORPUS / name).read_bytes()
            assert _swap_parties(_swap_parties(raw)) == raw, name
