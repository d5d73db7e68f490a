"""Every reply of the README's "What senders are told", over real SMTP."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import aiosmtplib
import pytest

from relay.app import Relay
from relay.core.config import RelayConfig, SmtpConfig
from relay.message.parse import TRACE_HEADER
from tests.helpers import Parties, Sink, build, buyer_writes, register, send, wait_idle


async def refused_at_rcpt(relay: Relay, sender: str, rcpt: str) -> aiosmtplib.SMTPRecipientRefused:
    msg = build(frm=sender, to=rcpt)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send(relay, msg, sender=sender, recipients=[rcpt])
    return exc.value.recipients[0]


@pytest.mark.parametrize(
    "rcpt",
    [
        "someone@gmail.example",
        "x@marketplace.example.com.evil.example",
        "@marketplace.example.com:victim@elsewhere.example",
        "victim%elsewhere.example@marketplace.example.com",
        '"victim@elsewhere.example"@marketplace.example.com',
    ],
)
async def test_open_relay_is_refused(relay: Relay, sink: Sink, parties: Parties, rcpt: str) -> None:
    refused = await refused_at_rcpt(relay, parties.buyer, rcpt)
    assert refused.code in (550, 553)  # 553: aiosmtpd refuses a source route as malformed
    assert refused.message.startswith("5.")
    assert sink.messages == []


async def test_outside_domain_is_relaying_denied(relay: Relay, parties: Parties) -> None:
    refused = await refused_at_rcpt(relay, parties.buyer, "someone@elsewhere.example")
    assert (refused.code, refused.message) == (550, "5.7.1 Relaying denied")


async def test_unknown_token(relay: Relay, parties: Parties) -> None:
    refused = await refused_at_rcpt(
        relay, parties.buyer, "aaaaaaaaaaaaaaaa@marketplace.example.com"
    )
    assert (refused.code, refused.message) == (550, "5.1.1 No such recipient")
    refused = await refused_at_rcpt(relay, parties.buyer, "sales@marketplace.example.com")
    assert refused.code == 550 and refused.message.startswith("5.1.1")


async def test_token_is_case_insensitive(relay: Relay, sink: Sink, parties: Parties) -> None:
    upper = parties.seller_token.upper()
    await send(relay, build(frm=parties.buyer, to=upper), sender=parties.buyer, recipients=[upper])
    await sink.wait_for(1)


@pytest.mark.parametrize("who", ["stranger", "seller_to_seller_token", "buyer_to_buyer_token"])
async def test_sender_not_allowed(relay: Relay, sink: Sink, parties: Parties, who: str) -> None:
    sender, rcpt = {
        "stranger": ("mallory@evil.example", parties.seller_token),
        "seller_to_seller_token": (parties.seller, parties.seller_token),
        "buyer_to_buyer_token": (parties.buyer, parties.buyer_token),
    }[who]
    refused = await refused_at_rcpt(relay, sender, rcpt)
    assert refused.code == 550 and refused.message.startswith("5.7.1")
    assert sink.messages == []


async def test_null_sender_cannot_write_to_a_token(relay: Relay, parties: Parties) -> None:
    refused = await refused_at_rcpt(relay, "", parties.seller_token)
    assert refused.code == 550 and refused.message.startswith("5.7.1")


async def test_messaging_off_refuses_new_buyers_only(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    from relay.storage import directory

    # An existing conversation: a message has passed before messaging is switched off.
    await buyer_writes(relay, parties)
    await sink.wait_for(1)
    relay.db.call(lambda s: directory.update_seller(s, parties.seller_id, messaging=False))

    def new_order(s):  # type: ignore[no-untyped-def]
        _o, conv = directory.add_order(
            s,
            "ORD-2",
            buyer_email="new@buyer.example",
            buyer_name="New",
            seller_id=parties.seller_id,
        )
        return f"{conv.seller_token}@marketplace.example.com"

    new_token = relay.db.call(new_order)
    refused = await refused_at_rcpt(relay, "new@buyer.example", new_token)
    assert refused.code == 550 and refused.message.startswith("5.7.1")
    assert "not accepting messages from new buyers" in refused.message

    await buyer_writes(relay, parties)
    await sink.wait_for(2)
    # The seller can still write to the new buyer: messaging off only stops new buyers.
    await send(
        relay,
        build(frm=parties.seller, to="x"),
        sender=parties.seller,
        recipients=[relay.db.call(lambda s: _buyer_token(s, "new@buyer.example"))],
    )
    await sink.wait_for(3)


def _buyer_token(session, email):  # type: ignore[no-untyped-def]
    from sqlmodel import select

    from relay.storage.models import Buyer, Conversation

    buyer = session.exec(select(Buyer).where(Buyer.email == email)).one()
    conv = session.exec(select(Conversation).where(Conversation.buyer_id == buyer.id)).one()
    return f"{conv.buyer_token}@marketplace.example.com"


async def test_size_is_announced_and_enforced(
    tmp_path: Path, config: RelayConfig, sink: Sink
) -> None:
    small = config.model_copy(
        update={"smtp": SmtpConfig(port=0, hostname="mx.test", max_message_size=20_000)}
    )
    relay = Relay(small)
    await relay.start()
    try:
        parties = register(relay)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port)
        await client.connect()
        await client.ehlo()
        assert client.supports_extension("size")
        assert client.esmtp_extensions["size"] == "20000"
        assert client.supports_extension("8bitmime")
        assert client.supports_extension("smtputf8")
        # Declared too big at MAIL FROM.
        code, text = await client.execute_command(
            f"MAIL FROM:<{parties.buyer}> SIZE=30000".encode()
        )
        assert (code, text) == (552, "5.3.4 Message size exceeds fixed maximum message size")
        # Not declared, but too big in DATA.
        await client.mail(parties.buyer)
        await client.rcpt(parties.seller_token)
        big = build(frm=parties.buyer, to=parties.seller_token, body="x" * 30_000)
        with pytest.raises(aiosmtplib.SMTPDataError) as exc:
            await client.data(big.as_bytes())
        assert exc.value.code == 552 and exc.value.message.startswith("5.3.4")
        await client.quit()
        assert sink.messages == []
    finally:
        await relay.stop()


async def test_mail_loop_too_many_hops(relay: Relay, sink: Sink, parties: Parties) -> None:
    msg = build(frm=parties.buyer, to=parties.seller_token)
    for i in range(31):
        msg["Received"] = f"from hop{i}.example by hop{i + 1}.example"
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    assert exc.value.code == 554 and exc.value.message.startswith("5.4.6")


async def test_mail_loop_own_trace_header(relay: Relay, sink: Sink, parties: Parties) -> None:
    msg = build(frm=parties.buyer, to=parties.seller_token, headers={TRACE_HEADER: "mx.test"})
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    assert exc.value.code == 554 and exc.value.message.startswith("5.4.6")
    assert sink.messages == []


async def test_database_unavailable_gives_451_and_sender_keeps_the_mail(
    relay: Relay,
    sink: Sink,
    parties: Parties,
    database_locked: Callable[[], AbstractContextManager[None]],
) -> None:
    msg = build(frm=parties.buyer, to=parties.seller_token, subject="while locked")
    with database_locked():  # another client holds what the relay needs to write
        with pytest.raises(aiosmtplib.SMTPDataError) as exc:
            await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
        assert exc.value.code == 451 and exc.value.message.startswith("4.3.0")
    await wait_idle(relay)
    assert sink.messages == []
    # The sender retries (as a real MTA does) and the message goes through.
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    (got,) = await sink.wait_for(1)
    assert got.message["Subject"] == "while locked"


async def test_non_ascii_addresses_with_smtputf8(relay: Relay, sink: Sink) -> None:
    parties = register(relay, buyer="người.mua@ví-dụ.example", buyer_name="Nguyễn Văn A")
    msg = build(
        frm=f"Nguyễn Văn A <{parties.buyer}>",
        to=parties.seller_token,
        body=f"Địa chỉ của tôi: {parties.buyer}",
    )
    await aiosmtplib.send(
        msg,
        hostname="127.0.0.1",
        port=relay.port,
        sender=parties.buyer,
        recipients=[parties.seller_token],
        mail_options=["SMTPUTF8"],
    )
    (got,) = await sink.wait_for(1)
    assert parties.buyer.encode() not in got.data
    assert "người.mua" not in got.data.decode("utf-8", "replace")
    assert got.message["From"].addresses[0].addr_spec == parties.buyer_token
    # And back: the buyer's real address is non-ASCII, so delivery needs SMTPUTF8.
    reply = build(frm=parties.seller, to=parties.buyer_token, body="Cảm ơn!")
    await send(relay, reply, sender=parties.seller, recipients=[parties.buyer_token])
    msgs = await sink.wait_for(2)
    assert msgs[1].rcpt_tos == [parties.buyer]
    assert parties.seller.encode() not in msgs[1].data
