"""The promises of SECURITY.md that other test modules do not already cover:
open-relay tricks with encoded and look-alike domains, header injection through
an encoded subject, unguessable tokens, and idle sessions.

Elsewhere: test_smtp_replies (open relay, source routes, % hack, quoted local
parts, sizes), test_authn (SPF/DKIM/DMARC, forged From), test_limits (rates,
header limits), test_guessing (token guessing), test_no_leak (no real address
leaks), test_tls (STARTTLS), test_names (registered names in the headers the
relay writes).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib
import pytest

from relay.app import Relay
from relay.core.config import SmtpConfig
from relay.core.tokens import TOKEN_LENGTH, new_token
from relay.storage import directory
from tests.helpers import Parties, Sink, build, make_config, register, send, wait_idle


@pytest.mark.parametrize(
    "rcpt",
    [
        "abcdefghijklmnop@marketplace%2eexample.com",  # percent-encoded dot
        "abcdefghijklmnop@marketplace.ex\u0430mple.com",  # a Cyrillic a: a look-alike domain
        "abcdefghijklmnop@xn--marketplace-xyz.example.com",
        "abcdefghijklmnop@marketplace.example.com.",  # trailing dot: still not ours
        "victim@elsewhere.example@marketplace.example.com",
    ],
)
async def test_look_alike_and_encoded_domains_are_not_relayed(
    relay: Relay, sink: Sink, parties: Parties, rcpt: str
) -> None:
    msg = build(frm=parties.buyer, to="x@y.example")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[rcpt])
    assert exc.value.recipients[0].code in (550, 553)
    assert sink.messages == []


async def test_an_encoded_line_break_in_a_subject_stays_in_the_subject(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    relay.db.call(lambda s: directory.set_opt_out(s, parties.buyer, True))
    subject = "=?utf-8?q?Hello=0D=0ABcc=3A_victim=40elsewhere=2Eexample?="
    msg = build(frm=parties.seller, to=parties.buyer_token, subject=subject)
    await send(relay, msg, sender=parties.seller, recipients=[parties.buyer_token])
    (notice,) = await sink.wait_for(1)  # opted out: the seller gets a notice quoting it
    head = notice.data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"(?im)^bcc:", head)
    assert notice.rcpt_tos == [parties.seller]


def test_tokens_are_random_and_not_enumerable() -> None:
    tokens = {new_token() for _ in range(5000)}
    assert len(tokens) == 5000
    assert all(re.fullmatch(rf"[a-z0-9]{{{TOKEN_LENGTH}}}", t) for t in tokens)
    # 36**16 (about 2**82) possibilities: each character position takes every value.
    for position in range(TOKEN_LENGTH):
        assert len({t[position] for t in tokens}) == 36


@asynccontextmanager
async def relay_with(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], **smtp: float
) -> AsyncIterator[Relay]:
    """A relay whose SMTP session timeouts are short enough to test."""
    base = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
    smtp_config = SmtpConfig(port=0, hostname="mx.test", **smtp)  # type: ignore[arg-type]
    relay = Relay(base.model_copy(update={"smtp": smtp_config}))
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def test_an_idle_session_is_closed(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str]
) -> None:
    """A slow-loris client that connects and says nothing is hung up on."""
    async with relay_with(tmp_path, sink, dkim_key, data_timeout=0.5) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        greeting = await reader.readline()
        assert greeting.startswith(b"220 ")
        rest = await asyncio.wait_for(reader.read(), timeout=5)  # EOF: the server hung up
        assert rest == b"" or rest.startswith(b"421")
        writer.close()


async def test_a_slow_drip_of_data_is_cut_off(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str]
) -> None:
    async with relay_with(tmp_path, sink, dkim_key, data_timeout=0.5) as relay:
        parties = register(relay)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        await reader.readline()
        for line in (b"EHLO x", f"MAIL FROM:<{parties.buyer}>".encode()):
            writer.write(line + b"\r\n")
            await writer.drain()
            while (await reader.readline())[3:4] != b" ":
                pass
        await asyncio.sleep(1.0)  # longer than the timeout between commands
        try:
            writer.write(f"RCPT TO:<{parties.seller_token}>\r\n".encode())
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=5)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
        assert not answer.startswith(b"250")
        writer.close()
        await wait_idle(relay)
        assert sink.messages == []


async def test_a_session_that_keeps_talking_is_closed_at_the_session_timeout(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str]
) -> None:
    async with relay_with(tmp_path, sink, dkim_key, data_timeout=5, session_timeout=1.0) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        await reader.readline()
        closed_after = None
        for tick in range(40):  # a NOOP every 0.1 s: never idle, never done
            writer.write(b"NOOP\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            if not line or line.startswith(b"421"):
                closed_after = tick
                break
            await asyncio.sleep(0.1)
        assert closed_after is not None and closed_after < 30
        writer.close()


def test_the_production_example_authenticates_senders() -> None:
    from relay.core.config import load_config

    config = load_config(Path(__file__).parents[1] / "config" / "production.example.yaml")
    assert config.auth.policy == "dmarc"
    assert config.delivery.smtp.starttls and config.delivery.smtp.verify
    assert config.smtp.tls_cert is not None
    default = load_config(Path(__file__).parents[1] / "config" / "relay.yaml")
    assert default.auth.policy == "none"
