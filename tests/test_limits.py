"""Abuse limits (limits.*): each one exceeded over real SMTP gets its reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio

from relay.app import Relay
from relay.config import LimitsConfig
from relay.limits import SlidingWindow
from tests.helpers import Parties, Sink, build, make_config, register, send

Start = Callable[..., Any]


@pytest_asyncio.fixture
async def limited(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """Start a relay with some limits changed: ``await limited(max_recipients=2)``."""
    started: list[Relay] = []

    async def start(**limits: int) -> tuple[Relay, Parties]:
        config = make_config(
            tmp_path,
            sink_port=sink.port,
            dkim_key=dkim_key[0],
            database_url=database_url,
            limits=LimitsConfig(**limits),
        )
        relay = Relay(config)
        await relay.start()
        started.append(relay)
        return relay, register(relay)

    yield start
    for relay in started:
        await relay.stop()


def client(relay: Relay) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10)


async def test_max_recipients(limited: Start) -> None:
    relay, parties = await limited(max_recipients=1)
    async with client(relay) as smtp:
        await smtp.mail(parties.buyer)
        await smtp.rcpt(parties.seller_token)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await smtp.rcpt(parties.seller_token)
        assert (exc.value.code, exc.value.message[:5]) == (452, "4.5.3")


async def test_max_connections(limited: Start) -> None:
    relay, _ = await limited(max_connections=1)
    async with client(relay) as first:
        await first.noop()
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as exc:
            async with client(relay):
                pass
        assert exc.value.code == 421
    async with client(relay) as again:  # the slot is free again
        await again.noop()


async def test_connections_per_ip(limited: Start) -> None:
    relay, _ = await limited(connections_per_ip=2)
    for _ in range(2):
        async with client(relay) as smtp:
            await smtp.noop()
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as exc:
        async with client(relay):
            pass
    assert exc.value.code == 421


async def test_messages_per_sender(limited: Start, sink: Sink) -> None:
    relay, parties = await limited(messages_per_sender=2)
    msg = build(frm=parties.buyer, to=parties.seller_token)
    for _ in range(2):
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    refused = exc.value.recipients[0]
    assert refused.code == 450 and "Too many messages from this sender" in refused.message


async def test_messages_per_conversation(limited: Start) -> None:
    relay, parties = await limited(messages_per_conversation=1)
    msg = build(frm=parties.buyer, to=parties.seller_token)
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    assert "in this conversation" in exc.value.recipients[0].message
    # The other direction has its own count.
    reply = build(frm=parties.seller, to=parties.buyer_token)
    await send(relay, reply, sender=parties.seller, recipients=[parties.buyer_token])


async def test_token_guessing_is_throttled(limited: Start) -> None:
    relay, parties = await limited(unknown_recipients_per_ip=3)
    async with client(relay) as smtp:
        await smtp.mail(parties.buyer)
        for guess in range(3):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
                await smtp.rcpt(f"guess{guess:011d}@marketplace.example.com")
            assert exc.value.code == 550
        # Now even the right token is refused, temporarily: guessing learns nothing.
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await smtp.rcpt(parties.seller_token)
        assert exc.value.code == 450


async def test_probing_a_right_token_with_a_wrong_sender_counts_as_guessing(limited: Start) -> None:
    relay, parties = await limited(unknown_recipients_per_ip=2)
    async with client(relay) as smtp:
        await smtp.mail("prober@elsewhere.example")
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
                await smtp.rcpt(parties.seller_token)
            assert exc.value.code == 550
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await smtp.rcpt(parties.seller_token)
        assert exc.value.code == 450


@pytest.mark.parametrize(
    ("limits", "extra", "text"),
    [
        ({"max_header_bytes": 2000}, {"X-Pad": "x" * 3000}, "Message header too large"),
        ({"max_headers": 10}, {f"X-H{i}": "v" for i in range(12)}, "Too many header fields"),
    ],
)
async def test_header_limits(
    limited: Start, limits: dict[str, int], extra: dict[str, str], text: str
) -> None:
    relay, parties = await limited(**limits)
    msg = build(frm=parties.buyer, to=parties.seller_token, headers=extra)
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    assert exc.value.code == 552 and text in exc.value.message


def test_sliding_window_forgets_old_events_and_bounds_memory() -> None:
    now = [0.0]
    window = SlidingWindow(2, 10.0, max_keys=3, clock=lambda: now[0])
    assert window.record("a") and window.record("a")
    assert not window.record("a") and window.exceeded("a")
    now[0] = 10.5
    assert not window.exceeded("a") and window.record("a")
    for key in "bcdef":
        window.record(key)
    assert len(window._events) == 3
