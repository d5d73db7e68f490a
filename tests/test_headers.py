"""``relay.message.headers``: the header section of received bytes, and header
fields written without the ``email`` object model.

Whatever is written must read back, with the ``email`` package and by RFC 2047's
rules, as the text it was given, on lines of at most 78 characters where the
words allow; and ``split`` must read a header section exactly as the ``email``
parser does, or decline.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import names
from relay.message import headers, mailpolicy

SELLER = "shop@seller.example"


def parsed_fields(raw: bytes) -> list[tuple[str, str]]:
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    return [(str(n), str(v)) for n, v in msg.raw_items()]


# --- split -------------------------------------------------------------------------

FIELD_LINE = st.one_of(
    st.sampled_from(
        [
            "Subject: hello",
            "Subject:hello",
            "Subject:   spaced",
            "X-Empty:",
            "X-Tab:\tvalue",
            "Content-Type: text/plain;",
            "Received: from a (b [10.0.0.1])",
            "To: =?utf-8?q?Ma=C3=AFa?= <a@b.example>",
            "Subject: caf\u00e9 raw",
        ]
    ),
    st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}:[ \t]?[ -~]{0,30}\Z"),
)
CONTINUATION = st.from_regex(r"\A[ \t][ -~]{0,30}\Z")


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.tuples(FIELD_LINE, st.lists(CONTINUATION, max_size=2)), min_size=1, max_size=8
    ),
    body=st.binary(max_size=40),
)
def test_split_reads_a_header_section_as_the_parser_does(
    lines: list[tuple[str, list[str]]], body: bytes
) -> None:
    head = "\r\n".join(line for first, rest in lines for line in (first, *rest))
    raw = head.encode("utf-8") + b"\r\n\r\n" + body
    section = headers.split(raw)
    assert section is not None
    assert section.fields == parsed_fields(raw)
    assert raw[section.body :] == body


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: no end",  # no empty line: the section never ends
        b" continued first\r\nSubject: x\r\n\r\n",
        b"From someone Mon Mar  3 10:00:00 2025\r\nSubject: x\r\n\r\n",  # a Unix From line
        b"Subject: x\r\nnot a field\r\n\r\n",
        b": no name\r\n\r\n",
        b"Subject: x\nTo: y\r\n\r\n",  # a bare line feed
        b"Subject: a\rb\r\n\r\n",  # a bare carriage return
    ],
)
def test_split_declines_what_the_parser_reads_with_a_defect(raw: bytes) -> None:
    assert headers.split(raw) is None


def test_split_of_a_message_without_headers() -> None:
    section = headers.split(b"\r\nbody\r\n")
    assert section is not None and section.fields == [] and section.body == 2


def test_crlf_only() -> None:
    assert headers.crlf_only(b"a\r\nb\r\n")
    assert not headers.crlf_only(b"a\nb\r\n")
    assert not headers.crlf_only(b"a\rb\r\n")


# --- fields --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
    name=st.sampled_from(["Subject", "X-A-Rather-Long-Header-Name-For-Folding", "Keywords"]),
    utf8=st.booleans(),
)
def test_a_text_field_reads_back_as_its_text(text: str, name: str, utf8: bool) -> None:
    """Whatever the (single-spaced) text, the field reads back as it, on lines of
    at most 78 characters after the first (which has the name and a word)."""
    text = " ".join(text.split())
    field = headers.text_field(name, text, utf8=utf8)
    assert field.endswith(b"\r\n") and headers.crlf_only(field)
    assert utf8 or field.isascii()
    for line in field.split(b"\r\n")[1:-1]:
        assert len(line.decode("utf-8")) <= headers.LINE
    msg = email.message_from_bytes(field + b"\r\n", policy=email.policy.default)
    assert str(msg[name]) == text


def rfc2047_phrase(text: str) -> str:
    """A display name as RFC 2047 §6.2 reads it (white space between two encoded
    words not shown), with ``email.header``'s decoder."""
    return str(make_header(decode_header(text)))


NAMES = st.one_of(
    st.sampled_from(
        [
            "Maria Santos - Example Marketplace",
            "Hà Nội Crafts",
            'Shop "Best", Inc.',
            "O'Brien",
            "Nguyễn Thị Maria - Example Marketplace",
            "x" * 150,
            "日本の店 " * 12,
            "",
        ]
    ),
    st.text(max_size=120),
)


@settings(max_examples=300, deadline=None)
@given(name=NAMES.map(names.display_name), utf8=st.booleans())
def test_an_address_field_reads_back_as_its_name(name: str, utf8: bool) -> None:
    field = headers.address_field("To", name, SELLER, utf8=utf8)
    assert field.endswith(b"\r\n") and headers.crlf_only(field)
    assert utf8 or field.isascii()
    value = "".join(field.decode("utf-8").removeprefix("To: ").splitlines())
    if "=?" in value:
        phrase, _, address = value.rpartition(" ")
        assert rfc2047_phrase(phrase) == name and address == f"<{SELLER}>"
        for line in field.split(b"\r\n")[:-1]:
            assert len(line) <= headers.LINE
    else:
        assert email.utils.parseaddr(value) == (name, SELLER)


def test_an_address_field_ends_its_encoded_words_at_spaces() -> None:
    """A reader that shows the space between two encoded words (the ``email``
    package does) then shows no space inside a word."""
    name = "Nguyễn Thị Maria - Example Marketplace Nguyễn Thị Maria - Example Marketplace"
    field = headers.address_field("From", name, SELLER, utf8=False)
    msg = email.message_from_bytes(field + b"\r\n", policy=email.policy.default)
    shown = msg["From"].addresses[0].display_name
    assert shown.split() == name.split()


@settings(max_examples=300, deadline=None)
@given(value=st.from_regex(r"\A[!-~][ -~\t]{0,300}\Z"))
def test_a_raw_field_unfolds_to_its_value(value: str) -> None:
    field = headers.raw_field("Content-Type", value)
    assert headers.crlf_only(field)
    assert field.decode("ascii").removeprefix("Content-Type: ").replace("\r\n", "") == (
        value + "\r\n"
    ).replace("\r\n", "")
    lines = field.split(b"\r\n")[:-1]
    for line in lines[1:]:
        assert line[:1] in (b" ", b"\t") and line.strip()
