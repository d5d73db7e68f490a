"""Token guessing is slowed, and valid mail from the same address is not
(SECURITY.md, "Tokens cannot be guessed"), over real SMTP.

Large providers send the mail of millions of users from a few shared IPs, so
what one of them does must not delay the others: only refused RCPTs (unknown
token, or a right token with the wrong sender) cost time, and too many of them
cost the session that made them.  Every test connects from 127.0.0.1, which is
a trusted network by default; the tests of the per-IP count trust nothing.
"""

from __future__ import annotations

import asyncio
import email.policy
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from relay.app import Relay
from relay.inbound import replies
from relay.inbound.replies import SmtpReply
from tests.helpers import Sink, build, send, wait_until

Start = Callable[..., Any]

GUESS = "guess{:011d}@marketplace.example.com"
"""A token-shaped local part that is nobody's token."""


class Client:
    """A bare SMTP client, to see each reply and when the server hangs up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, relay: Relay, sender: str) -> Client:
        """A session that said EHLO and MAIL FROM:<sender>."""
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        client = cls(reader, writer)
        assert (await client.reply())[0] == 220
        assert (await client.command("EHLO client.test"))[0] == 250
        assert await client.command(f"MAIL FROM:<{sender}>") == reply_of(replies.SENDER_OK)
        return client

    async def reply(self, timeout: float = 10) -> tuple[int, str]:
        """The next reply: (code, text of its last line)."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("the server closed the session")
            if line[3:4] != b"-":
                text = line.decode().rstrip("\r\n")
                return int(text[:3]), text[4:]

    async def command(self, line: str, timeout: float = 10) -> tuple[int, str]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply(timeout)

    async def rcpt(self, address: str, timeout: float = 10) -> tuple[int, str]:
        return await self.command(f"RCPT TO:<{address}>", timeout)

    async def hung_up(self, timeout: float = 10) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    def close(self) -> None:
        self.writer.close()


def reply_of(reply: SmtpReply) -> tuple[int, str]:
    """``reply`` as ``Client.reply`` reads it."""
    return reply.code, str(reply)[4:]


def wire(msg: EmailMessage) -> bytes:
    """``msg`` as DATA sends it, with CRLF line ends and the final dot."""
    data = msg.as_bytes(policy=email.policy.SMTP)
    assert not any(line.startswith(b".") for line in data.split(b"\r\n"))  # no dot-stuffing
    return data + b".\r\n"


async def timed_rcpt(client: Client, address: str) -> tuple[tuple[int, str], float]:
    started = time.monotonic()
    answer = await client.rcpt(address)
    return answer, time.monotonic() - started


async def test_a_guesser_does_not_hold_up_valid_mail_from_the_same_ip(
    limited: Start, sink: Sink
) -> None:
    """One client guesses past every limit; a buyer on the same IP still gets 250
    at once and the message is delivered, while the guesser's answer is held."""
    relay, parties = await limited(
        trusted_networks=[],
        unknown_recipients_per_ip=2,
        unknown_recipients_soft_limit=100,
        unknown_recipients_hard_limit=100,
        unknown_recipient_delay=30,
    )
    assert relay.handler is not None
    guesser = await Client.connect(relay, "guesser@provider.example")
    try:
        for n in range(2):  # the IP's allowance for the hour
            assert await guesser.rcpt(GUESS.format(n)) == reply_of(replies.UNKNOWN_TOKEN)
        held = asyncio.create_task(guesser.rcpt(GUESS.format(2), timeout=60))
        await wait_until(lambda: relay.handler is not None and relay.handler.held == 1)

        # Meanwhile a buyer on the same provider writes to the seller.
        msg = build(frm=parties.buyer, to=parties.seller_token)
        refused, reply = await send(
            relay, msg, sender=parties.buyer, recipients=[parties.seller_token]
        )
        assert refused == {} and reply.startswith("2.0.0")
        (delivered,) = await sink.wait_for(1)
        assert delivered.rcpt_tos == [parties.seller]
        assert not held.done() and relay.handler.held == 1  # still waiting its turn
    finally:
        guesser.close()
    await wait_until(lambda: relay.handler is not None and relay.handler.held == 0)
    with pytest.raises((ConnectionError, OSError)):
        await held


async def test_an_ip_over_its_hourly_count_has_every_refusal_slowed_not_its_mail(
    limited: Start, sink: Sink
) -> None:
    """Past ``unknown_recipients_per_ip``, a new session's very first refused RCPT is
    answered late (a guesser gains nothing by reconnecting) and still truthfully,
    while a valid RCPT in that session is accepted."""
    delay = 0.3
    relay, parties = await limited(
        trusted_networks=[],
        unknown_recipients_per_ip=2,
        unknown_recipients_soft_limit=100,
        unknown_recipients_hard_limit=100,
        unknown_recipient_delay=delay,
    )
    first = await Client.connect(relay, "guesser@provider.example")
    for n in range(2):
        assert await first.rcpt(GUESS.format(n)) == reply_of(replies.UNKNOWN_TOKEN)
    first.close()

    other = await Client.connect(relay, parties.buyer)
    answer, took = await timed_rcpt(other, GUESS.format(3))
    assert answer == reply_of(replies.UNKNOWN_TOKEN) and took >= 0.9 * delay
    assert await other.rcpt(parties.seller_token) == reply_of(replies.RECIPIENT_OK)
    assert (await other.command("DATA"))[0] == 354
    other.writer.write(wire(build(frm=parties.buyer, to=parties.seller_token)))
    assert (await other.reply())[0] == 250
    await sink.wait_for(1)
    other.close()


async def test_a_trusted_network_is_not_counted_per_ip(limited: Start) -> None:
    """Loopback is trusted by default: however many refusals came from it before,
    a new session's first one is answered at once (here: long before the 30 s
    an untrusted address would wait)."""
    relay, parties = await limited(
        unknown_recipients_per_ip=1,
        unknown_recipients_soft_limit=100,
        unknown_recipients_hard_limit=100,
        unknown_recipient_delay=30,
    )
    for n in range(3):
        client = await Client.connect(relay, parties.buyer)
        assert await client.rcpt(GUESS.format(n), timeout=5) == reply_of(replies.UNKNOWN_TOKEN)
        client.close()


async def test_a_session_that_keeps_guessing_is_slowed_then_closed(limited: Start) -> None:
    """Past the soft limit each refusal waits one step longer than the one before;
    past the hard limit the session gets 421 and is closed.  A valid recipient in
    between is accepted.  This holds for trusted networks too."""
    delay = 0.2
    relay, parties = await limited(
        unknown_recipients_soft_limit=1,
        unknown_recipients_hard_limit=3,
        unknown_recipient_delay=delay,
    )
    client = await Client.connect(relay, parties.buyer)
    waits = []
    for n in range(3):
        answer, took = await timed_rcpt(client, GUESS.format(n))
        assert answer == reply_of(replies.UNKNOWN_TOKEN)
        waits.append(took)
    assert waits[1] >= 0.9 * delay and waits[2] >= 0.9 * 2 * delay
    assert await client.rcpt(parties.seller_token) == reply_of(replies.RECIPIENT_OK)
    assert await client.rcpt(GUESS.format(3)) == reply_of(replies.TOO_MANY_UNKNOWN)
    assert await client.hung_up()
    client.close()


async def test_probing_a_token_with_the_wrong_sender_counts_as_guessing(limited: Start) -> None:
    relay, parties = await limited(
        unknown_recipients_soft_limit=0,
        unknown_recipients_hard_limit=2,
        unknown_recipient_delay=0,
    )
    client = await Client.connect(relay, "prober@elsewhere.example")
    for _ in range(2):
        assert await client.rcpt(parties.seller_token) == reply_of(replies.SENDER_NOT_ALLOWED)
    assert await client.rcpt(parties.seller_token) == reply_of(replies.TOO_MANY_UNKNOWN)
    assert await client.hung_up()
    client.close()


async def test_a_session_that_delivers_mail_starts_its_count_again(
    limited: Start, sink: Sink
) -> None:
    """A provider's session carries many users' mail: a stale token now and then
    between delivered messages never adds up to a hang-up."""
    relay, parties = await limited(
        unknown_recipients_soft_limit=0,
        unknown_recipients_hard_limit=2,
        unknown_recipient_delay=0,
    )
    client = await Client.connect(relay, parties.buyer)
    msg = wire(build(frm=parties.buyer, to=parties.seller_token))
    for round_ in range(2):
        for n in range(2):
            answer = await client.rcpt(GUESS.format(2 * round_ + n))
            assert answer == reply_of(replies.UNKNOWN_TOKEN)
        assert await client.rcpt(parties.seller_token) == reply_of(replies.RECIPIENT_OK)
        assert (await client.command("DATA"))[0] == 354
        client.writer.write(msg)
        assert (await client.reply())[0] == 250
        assert (await client.command(f"MAIL FROM:<{parties.buyer}>"))[0] == 250
    await sink.wait_for(2)
    for n in range(2):
        assert await client.rcpt(GUESS.format(10 + n)) == reply_of(replies.UNKNOWN_TOKEN)
    assert await client.rcpt(GUESS.format(12)) == reply_of(replies.TOO_MANY_UNKNOWN)
    assert await client.hung_up()
    client.close()
