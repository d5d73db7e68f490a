"""Buyer → seller → buyer over real SMTP: tokens, display names, threading, no leaks."""

from __future__ import annotations

from sqlmodel import Session, select

from relay.app import Relay
from relay.models import Message, MessageStatus
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
