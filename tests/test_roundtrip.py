"""Buyer → seller → buyer over real SMTP: tokens, display names, threading, no leaks."""

from __future__ import annotations

from sqlmodel import Session, select

from relay.app import Relay
from relay.storage.models import Message, MessageStatus
from tests.helpers import Parties, Sink, build, send, wait_until


async def test_buyer_to_seller_is_tokenized(relay: Relay, sink: Sink, parties: Parties) -> None:
    msg = build(
        frm=f"Maria Santos <{parties.buyer}>",
        to=parties.seller_token,
        subject=f"Question from {parties.buyer}",
        body=f"Hello, write to me at {parties.buyer} please.\n",
        headers={
            "Cc": "friend@elsewhere.example",
            "Reply-To": parties.buyer,
            "Received": "from laptop (10.1.2.3) by smtp.buyer.example",
            "X-Originating-IP": "[10.1.2.3]",
        },
    )
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    (got,) = await sink.wait_for(1)
    assert got.rcpt_tos == [parties.seller]
    assert got.mail_from.startswith("bounce+") and got.mail_from.endswith(
        "@marketplace.example.com"
    )
    assert parties.buyer.encode() not in got.data.lower()
    out = got.message
    assert out["From"].addresses[0].addr_spec == parties.buyer_token
    assert out["From"].addresses[0].display_name == "Maria Santos - Example Marketplace"
    assert out["To"].addresses[0].addr_spec == parties.seller
    assert out["Cc"] is None and out["Reply-To"] is None and out["Received"] is None
    assert out["X-Originating-IP"] is None
    assert parties.buyer_token in out["Subject"]
    assert parties.buyer_token in out.get_content()
    assert out["Message-ID"].endswith("@marketplace.example.com>")
    assert out["DKIM-Signature"] is not None


async def test_reply_threads_and_returns(relay: Relay, sink: Sink, parties: Parties) -> None:
    first = build(frm=parties.buyer, to=parties.seller_token, subject="Size?")
    buyer_msgid = first["Message-ID"]
    await send(relay, first, sender=parties.buyer, recipients=[parties.seller_token])
    (to_seller,) = await sink.wait_for(1)
    relay_id = to_seller.message["Message-ID"]
    assert relay_id != buyer_msgid

    reply = build(
        frm=f"Shop <{parties.seller}>",
        to=parties.buyer_token,
        subject="Re: Size?",
        body=f"It is size M.\n\nOn Monday {parties.buyer_token} wrote:\n> Size?\n"
        f"--\nShop, {parties.seller}",
        headers={"In-Reply-To": relay_id, "References": relay_id},
    )
    seller_msgid = reply["Message-ID"]
    await send(relay, reply, sender=parties.seller, recipients=[parties.buyer_token])
    msgs = await sink.wait_for(2)
    to_buyer = msgs[1]
    assert to_buyer.rcpt_tos == [parties.buyer]
    assert parties.seller.encode() not in to_buyer.data.lower()
    out = to_buyer.message
    assert out["From"].addresses[0].addr_spec == parties.seller_token
    assert out["From"].addresses[0].display_name == "Hà Nội Crafts"
    assert out["In-Reply-To"] == buyer_msgid  # the buyer's own Message-ID: it threads
    assert out["References"] == buyer_msgid
    assert seller_msgid not in to_buyer.data.decode("latin-1")

    # The buyer answers the reply: references to the seller's message map back.
    again = build(
        frm=parties.buyer,
        to=parties.seller_token,
        subject="Re: Re: Size?",
        headers={
            "In-Reply-To": out["Message-ID"],
            "References": f"{buyer_msgid} {out['Message-ID']}",
        },
    )
    await send(relay, again, sender=parties.buyer, recipients=[parties.seller_token])
    msgs = await sink.wait_for(3)
    third = msgs[2].message
    assert third["In-Reply-To"] == seller_msgid
    assert third["References"].split() == [relay_id, seller_msgid]

    def statuses(s: Session) -> list[MessageStatus]:
        return [m.status for m in s.exec(select(Message)).all()]

    await wait_until(lambda: relay.db.call(statuses) == [MessageStatus.DELIVERED] * 3)


async def test_one_mail_to_two_sellers_gives_each_their_own_copy(relay: Relay, sink: Sink) -> None:
    from tests.helpers import register

    first = register(relay)
    second = register(
        relay, seller=("sales@other.example",), seller_name="Other Store", order_id="ORD-2"
    )
    msg = build(
        frm=first.buyer,
        to=f"{first.seller_token}, {second.seller_token}",
        body=f"Asking you both. {first.buyer}",
    )
    await send(relay, msg, sender=first.buyer, recipients=[first.seller_token, second.seller_token])
    msgs = await sink.wait_for(2)
    by_rcpt = {m.rcpt_tos[0]: m for m in msgs}
    a, b = by_rcpt[first.seller], by_rcpt[second.seller]
    # Each seller sees the buyer under the token of its own conversation only.
    assert a.message["From"].addresses[0].addr_spec == first.buyer_token
    assert b.message["From"].addresses[0].addr_spec == second.buyer_token
    assert second.buyer_token.encode() not in a.data and first.buyer_token.encode() not in b.data
    for m in (a, b):
        assert first.buyer.encode() not in m.data.lower()
        assert b"sales@other.example" not in a.data and b"shop@seller.example" not in b.data


async def test_archive_keeps_what_was_received_and_what_was_delivered(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    msg = build(frm=parties.buyer, to=parties.seller_token, body=f"from {parties.buyer}")
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    await send(relay, raw, sender=parties.buyer, recipients=[parties.seller_token])
    (got,) = await sink.wait_for(1)

    def copies(s: Session) -> tuple[str | None, str | None]:
        m = s.exec(select(Message)).one()
        return m.received_path, m.delivered_path

    received, delivered = relay.db.call(copies)
    assert received and delivered
    assert relay.archive.read(received) == raw
    # What was sent is the archived delivered copy, with the DKIM signature in front.
    assert got.data.endswith(relay.archive.read(delivered))
    assert got.data.startswith(b"DKIM-Signature:")
