"""The relay's email policies: the standard ones, with cached header objects."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from relay.message import mailpolicy
from relay.message.mailpolicy import CachedHeaderRegistry

RAW = (
    b"From: =?utf-8?q?Nguy=E1=BB=85n?= <a@b.example>\r\n"
    b'To: x@y.example, "Q, R" <q@r.example>\r\n'
    b"Subject: =?utf-8?b?xJDhu4thIGNo4buJ?=\r\n"
    b'Content-Type: text/plain; charset="utf-8"; format=flowed\r\n'
    b"X-Anything: 1\r\n\r\nbody\r\n"
)


def parsed(policy: email.policy.EmailPolicy[EmailMessage]) -> EmailMessage:
    msg = email.message_from_bytes(RAW, _class=EmailMessage, policy=policy)
    assert isinstance(msg, EmailMessage)
    return msg


def test_same_headers_as_the_standard_policy() -> None:
    ours, standard = parsed(mailpolicy.DEFAULT), parsed(email.policy.default)
    for name in ("From", "To", "Subject", "Content-Type", "X-Anything"):
        assert str(ours[name]) == str(standard[name])
        assert type(ours[name]).__mro__[1:] == type(standard[name]).__mro__[1:]
    assert ours["To"].addresses == standard["To"].addresses
    assert ours.get_content_type() == "text/plain"
    assert ours["Content-Type"].params == standard["Content-Type"].params
    assert ours.as_bytes(policy=mailpolicy.SMTP) == standard.as_bytes(policy=email.policy.SMTP)


def test_a_header_is_parsed_once() -> None:
    msg = parsed(mailpolicy.DEFAULT)
    assert msg["Content-Type"] is msg["Content-Type"]


def test_memory_is_bounded_whatever_the_sender_sends() -> None:
    registry = CachedHeaderRegistry(maxsize=64)
    for n in range(2000):  # made-up names and values: neither grows without bound
        registry(f"X-Made-Up-{n}", f"value {n}")
        registry("Subject", f"subject {n}")
    assert registry._make.cache_info().currsize <= 64
    assert len(registry._classes) <= 2
