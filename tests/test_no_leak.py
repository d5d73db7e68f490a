"""Property: whatever the sender writes, their real address never reaches the recipient.

Hypothesis builds messages a careless (or crafty) sender could write: display names
that are the address itself, quoted, encoded words, unicode; Cc lists naming the
counterpart; subjects, X- headers and bodies that spell the sender's address in
upper case, inside ``mailto:`` and ``<>``, as ``&#64;`` or ``%40`` or with every
character escaped, in an HTML part, a base64 text part, a quoted-printable part
with a soft line break in the middle of the address, and quoted replies ("On ...
<addr> wrote:"); encoded words that are split inside the address, unpadded, in an
unknown charset or nested; folded headers; attachments whose file name (RFC 2231,
continuations included) names the sender; forwarded messages sent base64-encoded.
Each goes through the relay over SMTP, in either direction; the delivered bytes
must not spell the sender's real address anywhere (lower-cased, and after decoding
every header, parameter and text part), nor the recipient's outside its own To,
and the relay's INFO log must not spell either.

A message the relay cannot make safe is refused with a notice to the sender
(pipeline ``UnsafeMessage``): that is allowed, the property is about what is
delivered; the notice itself must not name the other party.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import logging
import quopri
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from relay.app import Relay
from tests.helpers import Parties, Sink, build, register, send, wait_until
from tests.leakcheck import find_leaks

BUYER = "maria@buyer.example"
SELLER = "shop@seller.example"

# Header text: anything printable (line breaks would end the header line we write).
HEADER_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=0, max_size=24
)
BODY_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=60
)


@dataclass
class Built:
    """A message as bytes and what the test needs to know about it."""

    data: bytes
    sender: str
    recipient: str
    direction: str


# --- spellings of an address --------------------------------------------------


@st.composite
def spelled(draw: st.DrawFn, address: str, *, html: bool = False) -> str:
    """``address`` as a person or a mail client might write it."""
    style = draw(
        st.sampled_from(
            [
                *("plain", "upper", "mixed", "mailto", "angle"),
                *("entity", "hexentity", "percent", "obfuscated"),
            ]
        )
    )
    if style == "obfuscated":  # any character as an entity or percent-encoded
        forms = st.lists(
            st.sampled_from(["{c}", "&#{o};", "&#x{o:x};", "%{o:02X}"]),
            min_size=len(address),
            max_size=len(address),
        )
        return "".join(f.format(c=c, o=ord(c)) for c, f in zip(address, draw(forms), strict=True))
    if style == "upper":
        return address.upper()
    if style == "mixed":
        flips = draw(st.lists(st.booleans(), min_size=len(address), max_size=len(address)))
        return "".join(c.upper() if f else c for c, f in zip(address, flips, strict=True))
    if style == "mailto":
        return f"mailto:{address}"
    if style == "angle":
        return f"&lt;{address}&gt;" if html else f"<{address}>"
    if style == "entity":
        return address.replace("@", draw(st.sampled_from(["&#64;", "&#064;"])))
    if style == "hexentity":
        return address.replace("@", draw(st.sampled_from(["&#x40;", "&#X40;", "&commat;"])))
    if style == "percent":
        return address.replace("@", "%40")
    return address


def q_word(text: str) -> str:
    """An RFC 2047 Q-encoded word."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch.isascii() and (ch.isalnum() or ch in "!*+-/"):
            out.append(ch)
        elif ch == " ":
            out.append("_")
        else:
            out.append(f"={byte:02X}")
    return f"=?utf-8?q?{''.join(out)}?="


def b_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


@st.composite
def encoded(draw: st.DrawFn, text: str) -> str:
    """``text`` as it may stand in a header: raw (8-bit if not ASCII), one encoded
    word, two adjacent encoded words split anywhere (inside an address too), or
    encoded words that are malformed: base64 without padding, an unknown charset,
    an encoded word inside another."""
    how = draw(st.sampled_from(["raw", "q", "b", "split", "nopad", "charset", "nested"]))
    if how == "q":
        return q_word(text)
    if how == "b":
        return b_word(text)
    if how == "split" and len(text) > 1:
        at = draw(st.integers(1, len(text) - 1))
        first, second = text[:at], text[at:]
        return f"{draw(st.sampled_from([q_word, b_word]))(first)} {q_word(second)}"
    if how == "nopad":
        return b_word(text).replace("=?=", "?=").replace("=?=", "?=")
    if how == "charset":
        return q_word(text).replace("=?utf-8?", "=?x-unknown-charset?")
    if how == "nested":
        return q_word(q_word(text))
    return text


def fold(line: str, where: list[bool]) -> str:
    """``line`` folded at some of its spaces, as mail clients fold long headers:
    ``where[i]`` says whether to fold at the i-th space (not where it runs out)."""
    head, sep, rest = line.partition(": ")
    words = rest.split(" ")
    out = words[0]
    for i, word in enumerate(words[1:]):
        out += ("\r\n\t" if i < len(where) and where[i] else " ") + word
    return head + sep + out


# --- headers -----------------------------------------------------------------


@st.composite
def mailbox(draw: st.DrawFn, address: str) -> str:
    """A From/Cc entry for ``address`` with some display name."""
    name = draw(
        st.one_of(
            HEADER_TEXT,
            st.just(address),
            spelled(address),
            st.sampled_from(
                [
                    "O'Brien",
                    'He said "hi"',
                    "Nguyễn Thị Maria",
                    "Mag-aaral, Juan",
                    "=?utf-8?q?broken",
                    "back\\slash",
                ]
            ),
        )
    )
    form = draw(st.sampled_from(["quoted", "bare", "encoded", "comment", "address-only"]))
    if form == "quoted":
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{address}>'
    if form == "bare":
        return f"{name} <{address}>"
    if form == "encoded":
        return f"{draw(encoded(name))} <{address}>"
    if form == "comment":
        return f"{address} ({name.replace('(', '').replace(')', '')})"
    return address


@st.composite
def messages(draw: st.DrawFn, parties: Parties) -> Built:
    direction = draw(st.sampled_from(["buyer", "seller"]))
    sender, recipient = (BUYER, SELLER) if direction == "buyer" else (SELLER, BUYER)
    token = parties.seller_token if direction == "buyer" else parties.buyer_token
    header_addr = draw(st.sampled_from([sender, sender.upper(), sender.capitalize()]))

    headers = [f"From: {draw(mailbox(header_addr))}"]
    headers.append(f"To: {draw(st.sampled_from([token, f'Shop <{token}>', token.upper()]))}")
    cc = draw(
        st.lists(
            st.sampled_from([recipient, sender, "friend@elsewhere.example", token]).flatmap(
                mailbox
            ),
            max_size=3,
        )
    )
    if cc:
        headers.append("Cc: " + ", ".join(cc))
    subject = f"{draw(HEADER_TEXT)} {draw(spelled(sender))} {draw(HEADER_TEXT)}"
    headers.append(f"Subject: {draw(encoded(subject))}")
    if draw(st.booleans()):
        headers.append(f"X-Contact: {draw(encoded(draw(spelled(sender))))}")
    if draw(st.booleans()):
        headers.append(f"Reply-To: {draw(mailbox(sender))}")
    headers = [fold(h, draw(st.lists(st.booleans(), max_size=8))) for h in headers]
    headers.append("Date: Mon, 3 Mar 2025 10:00:00 +0700")
    headers.append(f"Message-ID: <{draw(st.integers(0, 10**9))}@{sender.partition('@')[2]}>")

    body = draw(bodies(sender, recipient))
    data = "\r\n".join(headers).encode("utf-8") + b"\r\n" + body
    return Built(data, sender, recipient, direction)


# --- bodies ------------------------------------------------------------------


@st.composite
def body_text(draw: st.DrawFn, sender: str, recipient: str, *, html: bool = False) -> str:
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        pieces.append(draw(BODY_TEXT))
        kind = draw(st.sampled_from(["sender", "sender", "counterpart", "quote"]))
        if kind == "sender":
            pieces.append(draw(spelled(sender, html=html)))
        elif kind == "counterpart":
            pieces.append(draw(spelled(recipient, html=html)))
        else:
            who = draw(st.sampled_from([sender, recipient]))
            lt, gt = ("&lt;", "&gt;") if html else ("<", ">")
            pieces.append(f"\nOn Mon, 3 Mar 2025 at 10:00, Someone {lt}{who}{gt} wrote:\n> hi\n")
    text = " ".join(pieces)
    if html:
        link = draw(spelled(sender, html=True))
        text = f'<html><body><p>{text}</p><a href="mailto:{link}">{link}</a></body></html>'
    return text + "\n"


def text_part(text: str, subtype: str, cte: str) -> EmailMessage:
    part = EmailMessage()
    if cte == "7bit" and not text.isascii():
        cte = "8bit"
    part.set_content(text, subtype=subtype, cte=cte)
    return part


@st.composite
def soft_break_part(draw: st.DrawFn, sender: str) -> EmailMessage:
    """Quoted-printable text with a soft line break inside the sender's address."""
    at = draw(st.integers(1, len(sender) - 1))
    address = sender[:at] + "=\n" + sender[at:]
    if draw(st.booleans()):
        address = address.replace("@", "=40")
    before = quopri.encodestring(draw(BODY_TEXT).encode()).decode()
    after = quopri.encodestring(draw(BODY_TEXT).encode()).decode()
    subtype = draw(st.sampled_from(["plain", "html"]))
    part = EmailMessage()
    part["Content-Type"] = f"text/{subtype}; charset=utf-8"
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(f"{before}=\nWrite to {address} please.\n{after}")
    return part


@st.composite
def attachment(draw: st.DrawFn, sender: str) -> tuple[EmailMessage, dict[bytes, bytes]]:
    """A PDF whose file name names the sender: quoted, RFC 2231-encoded, or split
    over RFC 2231 continuations (inside the address).  The header is written raw
    (through a placeholder): the email package would refold it its own way."""
    name = f"invoice {draw(spelled(sender))}.pdf"
    quoted = email.utils.quote(name)
    how = draw(st.sampled_from(["quoted", "rfc2231", "continued"]))
    if how == "quoted":
        params = f'filename="{quoted}"'
    else:
        pct = urllib.parse.quote(name, safe="")
        if how == "rfc2231":
            params = f"filename*=utf-8''{pct}"
        else:
            at = draw(st.integers(1, len(pct) - 1))
            params = f"filename*0*=utf-8''{pct[:at]};\r\n filename*1*={pct[at:]}"
    placeholder = f"hyp-{draw(st.integers(0, 10**6))}.pdf"
    part = EmailMessage()
    part.set_content(b"%PDF-1.4 not much of a pdf", "application", "pdf", filename=placeholder)
    return part, {
        f'attachment; filename="{placeholder}"'.encode(): f"attachment; {params}".encode()
    }


@st.composite
def forwarded(draw: st.DrawFn, sender: str) -> tuple[EmailMessage, dict[bytes, bytes]]:
    """An attached message from the sender, base64-encoded (RFC 2046 says it must
    not be, mail clients show it anyway).  The type is swapped in afterwards: the
    email package would write the message unencoded."""
    inner = (
        f"From: Someone <{draw(spelled(sender))}>\r\n"
        f"Subject: {draw(encoded(sender))}\r\n\r\n"
        f"Written by {draw(spelled(sender))}\r\n"
    ).encode()
    part = EmailMessage()
    part["Content-Type"] = "text/x-hyp-rfc822"
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(base64.encodebytes(inner).decode())
    return part, {b"text/x-hyp-rfc822": b"message/rfc822"}


@st.composite
def body_part(
    draw: st.DrawFn, sender: str, recipient: str, raw: dict[bytes, bytes]
) -> EmailMessage:
    kind = draw(
        st.sampled_from(
            ["plain", "html", "base64", "softbreak", "attachment", "forwarded", "plain"]
        )
    )
    if kind in ("attachment", "forwarded"):
        part, replace = draw(attachment(sender) if kind == "attachment" else forwarded(sender))
        raw.update(replace)
        return part
    if kind == "softbreak":
        return draw(soft_break_part(sender))
    html = kind == "html"
    text = draw(body_text(sender, recipient, html=html))
    if kind == "base64":
        return text_part(text, draw(st.sampled_from(["plain", "html"])), "base64")
    cte = draw(st.sampled_from(["7bit", "8bit", "quoted-printable", "base64"]))
    return text_part(text, "html" if html else "plain", cte)


@st.composite
def bodies(draw: st.DrawFn, sender: str, recipient: str) -> bytes:
    """The MIME headers and body: one text part, or a multipart of a few."""
    shape = draw(st.sampled_from(["single", "alternative", "mixed", "nested"]))
    raw: dict[bytes, bytes] = {}
    count = draw(st.integers(1, 3))
    parts = [draw(body_part(sender, recipient, raw)) for _ in range(count)]
    if shape == "single":
        msg = parts[0]
    else:
        # Boundaries of our own: the email package would draw them with ``random``.
        msg = EmailMessage()
        sub = "alternative" if shape == "alternative" else "mixed"
        msg["Content-Type"] = f'multipart/{sub}; boundary="=_outer_hyp_7f3a"'
        for part in parts:
            msg.attach(part)
        if shape == "nested":
            inner = EmailMessage()
            inner["Content-Type"] = 'multipart/alternative; boundary="=_inner_hyp_7f3a"'
            inner.attach(draw(body_part(sender, recipient, raw)))
            inner.attach(draw(body_part(sender, recipient, raw)))
            msg.attach(inner)
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    data = msg.as_bytes(policy=email.policy.SMTP)
    for placeholder, value in raw.items():
        data = data.replace(placeholder, value)
    if draw(st.booleans()):  # folded MIME parameters, as most mail clients write them
        data = data.replace(b"; boundary=", b";\r\n\tboundary=").replace(
            b"; charset=", b";\r\n charset="
        )
    return data


# --- the property --------------------------------------------------------------


def relay_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Tracebacks and errors the relay logged: bad input must never cause either."""
    return [
        r
        for r in caplog.records
        if r.name.startswith("relay") and (r.exc_info or r.levelno >= logging.ERROR)
    ]


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_sender_address_never_delivered(
    relay: Relay,
    sink: Sink,
    parties: Parties,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    built = data.draw(messages(parties), label="message")
    note(built.data.decode("utf-8", "replace"))
    token = parties.seller_token if built.direction == "buyer" else parties.buyer_token
    sender_token = parties.buyer_token if built.direction == "buyer" else parties.seller_token

    before = len(sink.messages)
    _errors, reply = await send(relay, built.data, sender=built.sender, recipients=[token])
    assert reply.startswith("2.0.0"), reply
    await wait_until(lambda: len(sink.messages) > before, timeout=10)
    new = sink.messages[before:]
    delivered = [m for m in new if m.rcpt_tos == [built.recipient]]
    notices = [m for m in new if m.rcpt_tos == [built.sender] and m.mail_from == ""]
    assert len(delivered) + len(notices) == 1, [(m.mail_from, m.rcpt_tos) for m in new]

    if notices:  # refused as unsafe: allowed, but say so, and the notice must be clean
        event("refused with a notice")
        assert find_leaks(notices[0].data, built.recipient) == []
    else:
        got = delivered[0]
        assert find_leaks(got.data, built.sender) == []
        assert find_leaks(got.data, built.recipient, except_to=True) == []
        assert built.sender.encode() not in got.data.lower()
        msg = got.message
        assert [a.addr_spec for a in msg["From"].addresses] == [sender_token]
    assert relay_failures(caplog) == []
    # Nor does the relay's log name either party by address, at INFO (relay.logs).
    logged = caplog.text.lower()
    assert built.sender.lower() not in logged
    assert built.recipient.lower() not in logged


@pytest.mark.parametrize(
    "buyer", ["straße@bücher.example", "người.mua@ví-dụ.example", "Ana.Cruz@Mail.Example"]
)
async def test_unicode_and_case_spellings_never_delivered(
    relay: Relay, sink: Sink, caplog: pytest.LogCaptureFixture, buyer: str
) -> None:
    """Addresses whose case folding changes their length (ß → ss), IDN domains in
    their Unicode and their xn-- forms, and mixed case as registered."""
    caplog.set_level(logging.INFO, logger="relay")
    parties = register(relay, buyer=buyer, buyer_name="Buyer")
    local, _, domain = buyer.rpartition("@")
    ascii_domain = domain.encode("idna").decode("ascii")
    spellings = {
        buyer,
        buyer.lower(),
        buyer.upper(),
        buyer.casefold(),
        f"{local}@{ascii_domain}",
        f"{local.upper()}@{ascii_domain.upper()}",
    }
    body = "\n".join(
        [f"Write to {s}, <a href='mailto:{s.replace('@', '&#64;')}'>me</a>." for s in spellings]
    )
    msg = build(frm=f"Buyer <{buyer}>", to=parties.seller_token, subject=buyer, body=body)
    await aiosmtplib.send(
        msg,
        hostname="127.0.0.1",
        port=relay.port,
        sender=buyer,
        recipients=[parties.seller_token],
        mail_options=["SMTPUTF8"],
        timeout=30,
    )
    (got,) = await sink.wait_for(1)
    assert got.rcpt_tos == [parties.seller]
    for spelling in spellings:
        assert find_leaks(got.data, spelling) == [], spelling
    assert got.message["From"].addresses[0].addr_spec == parties.buyer_token
    assert relay_failures(caplog) == []
