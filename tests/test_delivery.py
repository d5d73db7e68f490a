"""Outbound delivery: retries, permanent failures, give-up, and DSNs to VERP addresses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from relay.app import Relay
from relay.core.config import RelayConfig, RetryConfig
from relay.delivery.spool import backoff
from relay.storage.models import Delivery, DeliveryAttempt, DeliveryStatus, Direction, Message
from relay.storage.models import MessageStatus as MS
from tests.helpers import (
    Parties,
    Sink,
    buyer_writes,
    register,
    seller_writes,
    send_null_sender,
    wait_idle,
    wait_until,
)


def rows(relay: Relay) -> list[tuple[Direction, MS]]:
    def run(s: Session) -> list[tuple[Direction, MS]]:
        return [(m.direction, m.status) for m in s.exec(select(Message).order_by(Message.id))]  # type: ignore[arg-type]

    return relay.db.call(run)


def attempts(relay: Relay) -> list[str]:
    def run(s: Session) -> list[str]:
        return [a.outcome for a in s.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id))]  # type: ignore[arg-type]

    return relay.db.call(run)


async def test_smarthost_connection_is_reused(relay: Relay, sink: Sink, parties: Parties) -> None:
    for n in range(1, 5):
        await buyer_writes(relay, parties, subject=f"message {n}")
        await sink.wait_for(n)
    assert len({m.peer for m in sink.messages}) == 1
    assert len(sink.handler.connections) == 1


async def test_connection_dropped_while_idle_is_replaced_without_delay(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    await buyer_writes(relay, parties, subject="first")
    await sink.wait_for(1)
    sink.handler.hang_up()
    await asyncio.sleep(0.1)
    await buyer_writes(relay, parties, subject="second")
    await sink.wait_for(2)
    await wait_until(lambda: attempts(relay) == ["delivered", "delivered"])
    assert sink.messages[0].peer != sink.messages[1].peer


def test_backoff_doubles_up_to_max() -> None:
    retry = RetryConfig(initial_delay=60, max_delay=3600, give_up_after=432000)
    assert [backoff(retry, n) for n in (1, 2, 3, 6, 7, 20)] == [60, 120, 240, 1920, 3600, 3600]


@pytest.mark.parametrize(
    "fault", ["421 4.3.2 try later", "451 4.3.0 busy", "552 5.2.2 mailbox full"]
)
async def test_temporary_failures_only_delay(
    relay: Relay, sink: Sink, parties: Parties, fault: str
) -> None:
    sink.handler.rcpt_faults.extend([fault, fault])
    await buyer_writes(relay, parties)
    (got,) = await sink.wait_for(1, timeout=15)
    assert got.rcpt_tos == [parties.seller]
    await wait_until(lambda: rows(relay) == [(Direction.BUYER_TO_SELLER, MS.DELIVERED)])
    assert attempts(relay) == ["deferred", "deferred", "delivered"]
    await wait_idle(relay)
    assert len(sink.messages) == 1


async def test_downstream_outage_only_delays(
    tmp_path: Path, config: RelayConfig, parties: Parties, relay: Relay, sink: Sink
) -> None:
    port = sink.port
    sink.server.close()
    await sink.server.wait_closed()
    await buyer_writes(relay, parties)
    await wait_until(lambda: attempts(relay).count("deferred") >= 2)
    from tests.helpers import start_sink

    back = await start_sink(port)
    try:
        (got,) = await back.wait_for(1, timeout=15)
        assert got.rcpt_tos == [parties.seller]
    finally:
        back.server.close()
        await back.server.wait_closed()


async def test_permanent_failure_gives_exactly_one_notice(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    # The buyer's server refuses, naming the buyer's real address in its reply.
    sink.handler.rcpt_faults.append(f"550 5.1.1 <{parties.buyer}>: Recipient address rejected")
    await seller_writes(relay, parties, subject="Your parcel")
    (notice,) = await sink.wait_for(1)
    assert notice.rcpt_tos == [parties.seller] and notice.mail_from == ""
    text = " ".join(notice.message.get_content().split())
    assert "could not be delivered" in text and "550 5.1.1" in text
    assert parties.buyer_token in text
    assert parties.buyer.encode() not in notice.data.lower()
    assert notice.message["Auto-Submitted"] == "auto-replied"
    await wait_until(
        lambda: (
            rows(relay)
            == [(Direction.SELLER_TO_BUYER, MS.FAILED), (Direction.NOTICE, MS.DELIVERED)]
        )
    )
    await wait_idle(relay)
    assert len(sink.messages) == 1


async def test_give_up_after_the_retry_window(sink: Sink, config: RelayConfig) -> None:
    short = config.model_copy(
        update={
            "delivery": config.delivery.model_copy(
                update={"retry": RetryConfig(initial_delay=0.1, max_delay=0.2, give_up_after=1)}
            )
        }
    )
    relay = Relay(short)
    await relay.start()
    try:
        parties = register(relay)
        sink.handler.refuse[parties.seller] = "451 4.4.1 no answer from host"
        await buyer_writes(relay, parties, subject="Will not arrive")
        await wait_until(
            lambda: rows(relay)[:1] == [(Direction.BUYER_TO_SELLER, MS.FAILED)], timeout=15
        )
        assert "gave_up" in attempts(relay)
        (notice,) = await sink.wait_for(1)
        assert notice.rcpt_tos == [parties.buyer]
        assert "could not be delivered" in " ".join(notice.message.get_content().split())
        assert parties.seller.encode() not in notice.data.lower()
    finally:
        await relay.stop()


def dsn(verp_address: str, *, action: str, status: str, recipient: str) -> bytes:
    """An RFC 3464 report as a receiving MTA sends it."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.buyer.example>\r\n"
        f"To: {verp_address}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
        f"Your message could not be delivered to {recipient}.\r\n"
        "\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.buyer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{recipient}>: user unknown\r\n"
        "\r\n--b1--\r\n"
    ).encode()


async def test_hard_bounce_dsn_notifies_the_sender_once(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    await seller_writes(relay, parties, subject="Tracking number")
    (delivered,) = await sink.wait_for(1)
    verp = delivered.mail_from
    assert verp.startswith("bounce+")
    report = dsn(verp, action="failed", status="5.1.1", recipient=parties.buyer)
    for _ in range(2):  # the same DSN twice: still one notice
        await send_null_sender(relay, report, recipients=[verp])
    msgs = await sink.wait_for(2)
    notice = msgs[1]
    assert notice.rcpt_tos == [parties.seller]
    assert "returned by the recipient's mail server" in " ".join(
        notice.message.get_content().split()
    )
    assert parties.buyer.encode() not in notice.data.lower()
    await wait_until(
        lambda: (
            rows(relay)
            == [(Direction.SELLER_TO_BUYER, MS.FAILED), (Direction.NOTICE, MS.DELIVERED)]
        )
    )

    def status(s: Session) -> DeliveryStatus:
        return s.exec(select(Delivery).order_by(Delivery.id)).first().status  # type: ignore[arg-type,union-attr]

    assert relay.db.call(status) is DeliveryStatus.BOUNCED
    await wait_idle(relay)
    assert len(sink.messages) == 2


async def test_soft_bounce_dsn_is_recorded(relay: Relay, sink: Sink, parties: Parties) -> None:
    await buyer_writes(relay, parties)
    (delivered,) = await sink.wait_for(1)
    report = dsn(delivered.mail_from, action="delayed", status="4.4.7", recipient=parties.seller)
    await send_null_sender(relay, report, recipients=[delivered.mail_from])
    await wait_until(lambda: "dsn_delayed" in attempts(relay))
    assert rows(relay) == [(Direction.BUYER_TO_SELLER, MS.DELIVERED)]
    await wait_idle(relay)
    assert len(sink.messages) == 1


async def test_unknown_verp_is_refused(relay: Relay) -> None:
    report = dsn(
        "bounce+nosuchdelivery1@marketplace.example.com",
        action="failed",
        status="5.1.1",
        recipient="x@y.example",
    )
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send_null_sender(
            relay, report, recipients=["bounce+nosuchdelivery1@marketplace.example.com"]
        )
    assert exc.value.recipients[0].code == 550


async def test_delivered_mail_is_dkim_signed(
    relay: Relay, sink: Sink, parties: Parties, dkim_key: tuple[Path, str]
) -> None:
    await buyer_writes(relay, parties)
    (got,) = await sink.wait_for(1)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"relay._domainkey.marketplace.example.com."
        return dkim_key[1].encode()

    assert dkim.verify(got.data, dnsfunc=dns)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r\n", b"\r", b"\n", b" ", b"\r\r\n"]), max_size=30))
def test_the_quick_line_end_check_gives_aiosmtplibs_result(pieces: list[bytes]) -> None:
    """Delivery hands aiosmtplib's line-end normalisation a cheaper first look;
    whatever the message, the bytes sent are the ones aiosmtplib would send."""
    from relay.delivery import outbound

    message = b"".join(pieces)
    assert outbound._line_ends(message) == outbound._AIOSMTPLIB_LINE_ENDS(message)
    crlf = message.replace(b"\r", b"").replace(b"\n", b"\r\n")
    assert outbound._line_ends(crlf) == outbound._AIOSMTPLIB_LINE_ENDS(crlf)
    import aiosmtplib.protocol

    assert aiosmtplib.protocol.normalize_message_line_endings is outbound._line_ends
