"""The SMTP server's shortcuts past aiosmtpd's slow paths give aiosmtpd's results:
the quick reading of ``<local@domain>``, and the verbs and hooks a new session
finds without walking every attribute."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.inbound.server import InboundHandler, RelaySMTP, smtp_factory


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[RelaySMTP, SMTP]]:
    loop = asyncio.new_event_loop()
    try:
        yield (
            RelaySMTP(object(), hostname="mx.test", loop=loop),
            SMTP(object(), hostname="mx.test", loop=loop),
        )
    finally:
        loop.close()


_PIECES = st.sampled_from(
    [
        "a", "Zed", "0", ".", "..", "-", "+tag", "_", "!", "#", "'", "=", "?", "{", "~", "é",
        "@", "@@", "<", ">", "<>", " ", "  ", "\\t", '"', '"q"', "(c)", "[", "]", "[1.2.3.4]",
        ":", ",", ";", "\\\\", "/", "xn--", "example", ".com", "-x", "x-", " SIZE=100",
        " BODY=8BITMIME", "=", "@route,@x:",
    ]
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_any_path_reads_as_aiosmtpd_reads_it(servers: tuple[RelaySMTP, SMTP], arg: str) -> None:
    ours, theirs = servers
    assert _read(ours, arg) == _read(theirs, arg)


def _read(server: SMTP, arg: str) -> object:
    """The result, or the exception's type: aiosmtpd's parser raises on some
    malformed paths (the session answers them with a 4xx), and so must ours."""
    try:
        return server._getaddr(arg)
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize(
    "arg",
    [
        "<buyer@buyer.example>",
        "<buyer.name+tag@mail.buyer.example> SIZE=4206",
        "<a1b2c3d4@marketplace.example.com>",
        "<bounce+abc123@marketplace.example.com> BODY=8BITMIME SMTPUTF8",
    ],
)
def test_the_common_paths_are_read(servers: tuple[RelaySMTP, SMTP], arg: str) -> None:
    ours, theirs = servers
    assert ours._getaddr(arg) == theirs._getaddr(arg)
    assert ours._getaddr(arg)[0] == arg[1 : arg.index(">")]


def test_the_local_part_limit_still_applies(servers: tuple[RelaySMTP, SMTP]) -> None:
    ours, theirs = servers
    long = f"<{'x' * 70}@example.com>"
    ours.local_part_limit = theirs.local_part_limit = 64
    try:
        assert ours._getaddr(long) == theirs._getaddr(long) == (None, None)
    finally:
        ours.local_part_limit = theirs.local_part_limit = 0


async def test_a_session_finds_the_verbs_and_hooks_aiosmtpd_would_find() -> None:
    handler = InboundHandler.__new__(InboundHandler)  # the hooks are the class's
    server = smtp_factory(handler, hostname="mx.test", max_size=1000, data_timeout=5)()

    def named(obj: object, prefix: str) -> set[str]:
        return {n.removeprefix(prefix) for n in object.__dir__(obj) if n.startswith(prefix)}

    assert set(server._smtp_methods) == named(server, "smtp_")
    assert set(server._handle_hooks) == named(handler, "handle_")
    assert {"DATA", "MAIL", "RCPT", "exception"} <= set(server._handle_hooks)
    assert set(server._auth_methods) == {
        n.replace("__", "-") for n in named(server, "auth_") | named(handler, "auth_")
    }
