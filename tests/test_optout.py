"""Opt-out: blocked with one notice; each exemption delivers; no notice loops."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from relay.app import Relay
from relay.storage import directory
from relay.storage.models import Direction, Message, MessageStatus
from tests.helpers import (
    Parties,
    Sink,
    build,
    buyer_writes,
    register,
    send,
    wait_idle,
    wait_until,
)


def messages(relay: Relay) -> list[Message]:
    def run(s: Session) -> list[Message]:
        return list(s.exec(select(Message).order_by(Message.id)).all())  # type: ignore[arg-type]

    return relay.db.call(run)


def opt_out(relay: Relay, email: str) -> None:
    relay.db.call(lambda s: directory.set_opt_out(s, email, True))


async def seller_writes(relay: Relay, parties: Parties, subject: str, **headers: str) -> None:
    msg = build(
        frm=f"Shop <{parties.seller}>",
        to=parties.buyer_token,
        subject=subject,
        body="Thanks for your order! Please leave a review.",
        headers=headers,
    )
    await send(relay, msg, sender=parties.seller, recipients=[parties.buyer_token])


async def test_opted_out_buyer_is_not_written_to_and_seller_gets_one_notice(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    opt_out(relay, parties.buyer)
    await seller_writes(relay, parties, "Please review us")
    (notice,) = await sink.wait_for(1)
    assert notice.rcpt_tos == [parties.seller]
    assert notice.mail_from == ""  # null envelope sender
    out = notice.message
    assert out["Auto-Submitted"] == "auto-replied"
    text = " ".join(out.get_content().split())
    assert "opted out of unsolicited messages" in text
    assert "[Important]" in text
    assert parties.buyer_token in text
    assert parties.buyer.encode() not in notice.data.lower()
    assert out["DKIM-Signature"] is not None

    await wait_until(
        lambda: (
            [m.status for m in messages(relay)] == [MessageStatus.BLOCKED, MessageStatus.DELIVERED]
        )
    )
    blocked, archived_notice = messages(relay)
    assert blocked.direction is Direction.SELLER_TO_BUYER
    assert archived_notice.direction is Direction.NOTICE
    assert archived_notice.about_message_id == blocked.id
    await wait_idle(relay)
    assert len(sink.messages) == 1  # the buyer got nothing


@pytest.mark.parametrize(
    ("subject", "delivered"),
    [
        ("[Important] Your engraving text", True),
        ("Re: [Important] delivery slot", True),
        ("[important] lower case does not count", False),
        ("Important without brackets", False),
        ("[ Important ] spaced", False),
    ],
)
async def test_important_tag_is_exact(
    relay: Relay, sink: Sink, parties: Parties, subject: str, delivered: bool
) -> None:
    opt_out(relay, parties.buyer)
    await seller_writes(relay, parties, subject)
    (got,) = await sink.wait_for(1)
    assert got.rcpt_tos == [parties.buyer if delivered else parties.seller]


async def test_buyer_initiated_conversation_is_exempt(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    opt_out(relay, parties.buyer)
    await buyer_writes(relay, parties, subject="Question")
    await sink.wait_for(1)
    await seller_writes(relay, parties, "Re: Question")
    msgs = await sink.wait_for(2)
    assert msgs[1].rcpt_tos == [parties.buyer]


@pytest.mark.parametrize("category", ["handmade", "custom", "alcohol"])
async def test_exempt_order_category(relay: Relay, sink: Sink, category: str) -> None:
    parties = register(relay, categories=[category])
    opt_out(relay, parties.buyer)
    await seller_writes(relay, parties, "About your order")
    (got,) = await sink.wait_for(1)
    assert got.rcpt_tos == [parties.buyer]


async def test_other_category_is_not_exempt(relay: Relay, sink: Sink) -> None:
    parties = register(relay, categories=["electronics"])
    opt_out(relay, parties.buyer)
    await seller_writes(relay, parties, "About your order")
    (got,) = await sink.wait_for(1)
    assert got.rcpt_tos == [parties.seller]


async def test_opted_in_again_receives(relay: Relay, sink: Sink, parties: Parties) -> None:
    opt_out(relay, parties.buyer)
    relay.db.call(lambda s: directory.set_opt_out(s, parties.buyer, False))
    await seller_writes(relay, parties, "News")
    (got,) = await sink.wait_for(1)
    assert got.rcpt_tos == [parties.buyer]


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Auto-Submitted": "auto-generated"},
        {"Precedence": "bulk"},
    ],
)
async def test_no_notice_for_automatic_mail(
    relay: Relay, sink: Sink, parties: Parties, headers: dict[str, str]
) -> None:
    opt_out(relay, parties.buyer)
    await seller_writes(relay, parties, "Out of office", **headers)
    await wait_until(lambda: [m.status for m in messages(relay)] == [MessageStatus.BLOCKED])
    await wait_idle(relay)
    assert sink.messages == []
    assert [m.direction for m in messages(relay)] == [Direction.SELLER_TO_BUYER]


async def test_a_failed_notice_is_not_answered(relay: Relay, sink: Sink, parties: Parties) -> None:
    opt_out(relay, parties.buyer)
    sink.handler.rcpt_faults.append("550 5.1.1 no such mailbox")  # the notice bounces
    await seller_writes(relay, parties, "Hello")

    def notice_status() -> list[tuple[Direction, MessageStatus]]:
        return [(m.direction, m.status) for m in messages(relay)]

    await wait_until(
        lambda: (
            notice_status()
            == [
                (Direction.SELLER_TO_BUYER, MessageStatus.BLOCKED),
                (Direction.NOTICE, MessageStatus.FAILED),
            ]
        )
    )
    await wait_idle(relay)
    assert len(messages(relay)) == 2
    assert sink.messages == []
