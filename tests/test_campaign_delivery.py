"""Brand campaigns delivered end to end: a real relay, its real outbound worker,
the recording SMTP sink, a real database (SQLite and PostgreSQL).

Each test builds a brand, its followers and campaigns with ``catalog`` and
``lifecycle`` (submitted and approved, starting a few days ahead), then drives
the relay's own dispatcher pass by pass at chosen times (``pass_once(now)``, or
``clock.advance`` then ``pass_once(clock.now())``), waits for the sink to
receive what each pass queued, and checks what arrived, when, and what the
campaign's report says.  The dispatcher's background loop polls once an hour
here, so only the test's passes move campaigns on.  The last tests check the
renderer alone (hypothesis): a follower's address appears in ``To`` and
nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlmodel import Session, col, select

from relay.app import Relay
from relay.campaigns import catalog, lifecycle, rules
from relay.campaigns.dispatch import PassReport
from relay.campaigns.lifecycle import Draft
from relay.campaigns.models import (
    Brand,
    Campaign,
    CampaignKind,
    CampaignSend,
    CampaignStatus,
    Follower,
    Product,
    Promotion,
    PromotionKind,
    PromotionStatus,
    SendStatus,
)
from relay.campaigns.render import Content, Recipient, Renderer
from relay.campaigns.report import campaign_report
from relay.core import addresses, clock
from relay.core.clock import as_utc
from relay.core.config import CampaignsConfig, RelayConfig, UnsubscribeConfig
from relay.message.compose import leaks
from relay.ops import retention
from relay.storage import directory
from relay.storage.models import Delivery, Direction, Message
from tests.helpers import (
    Received,
    Sink,
    make_config,
    send_null_sender,
    wait_idle,
    wait_until_async,
)
from tests.test_delivery import dsn

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


HANDED_OVER = (SendStatus.SENT, SendStatus.DELIVERED)
"""A send queued for delivery: ``delivered`` once the sink has taken it."""


@pytest.fixture
def config(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> RelayConfig:
    """The suite's config, with a dispatcher that only moves when a test runs a
    pass (its own loop polls once an hour) and small batches, so a pass takes
    several transactions."""
    return make_config(
        tmp_path,
        sink_port=sink.port,
        dkim_key=dkim_key[0],
        database_url=database_url,
        campaigns=CampaignsConfig(
            poll_interval=3600, batch=5, unsubscribe=UnsubscribeConfig(listen="127.0.0.1:0")
        ),
    )


# --- building the world -----------------------------------------------------


@dataclass
class World:
    brand_id: int
    product_id: int
    buyers: dict[str, int]
    """Follower's address → buyer id."""


def add_brand(relay: Relay, name: str, emails: Iterable[str]) -> World:
    """A registered brand with a store page, one product, and these followers."""

    def run(s: Session) -> World:
        brand = catalog.add_brand(s, name=name, registered=True, store_page=True)
        assert brand.id is not None
        product = catalog.add_product(
            s,
            brand.id,
            sku=f"SKU-{brand.id}-{len(name)}",
            title=f"{name} gift box",
            price="250,000 ₫",
            description="Hand made, wrapped for giving.",
        )
        assert product.id is not None
        buyers = {}
        for i, address in enumerate(emails):
            follower = catalog.follow(s, brand.id, address, name=f"Customer {i}")
            buyers[address] = follower.buyer_id
        return World(brand.id, product.id, buyers)

    return relay.db.write(run)


def follow(relay: Relay, world: World, emails: Iterable[str]) -> None:
    def run(s: Session) -> None:
        for address in emails:
            world.buyers[address] = catalog.follow(s, world.brand_id, address).buyer_id

    relay.db.write(run)


def approved_campaign(
    relay: Relay,
    world: World,
    start_on: date,
    *,
    subject: str = "New this week",
    kind: CampaignKind = CampaignKind.NEW_PRODUCT,
    promotion_id: int | None = None,
) -> int:
    """A campaign created, submitted and approved now (``clock.now()``)."""

    def run(s: Session) -> int:
        campaign = lifecycle.create(
            s,
            world.brand_id,
            Draft(
                kind=kind,
                main_product_id=world.product_id,
                promotion_id=promotion_id,
                subject=subject,
                content="Our new collection is here.\n\nEach piece is made by hand.",
                start_on=start_on,
            ),
        )
        assert campaign.id is not None
        lifecycle.submit(s, campaign.id)
        lifecycle.review(s, campaign.id, approve=True)
        return campaign.id

    return relay.db.write(run)


def first_day(days_ahead: int = 4) -> date:
    """A start date that leaves review its 72 hours."""
    return (clock.now() + timedelta(days=days_ahead)).date()


def report(relay: Relay, campaign_id: int) -> dict[str, Any]:
    return relay.db.call(campaign_report, campaign_id)


def status(relay: Relay, campaign_id: int) -> CampaignStatus:
    return relay.db.call(lambda s: lifecycle.get_campaign(s, campaign_id).status)


def sends(relay: Relay, campaign_id: int) -> list[CampaignSend]:
    def run(s: Session) -> list[CampaignSend]:
        query = select(CampaignSend).where(CampaignSend.campaign_id == campaign_id)
        return list(s.exec(query.order_by(col(CampaignSend.id))).all())

    return relay.db.call(run)


def follower_row(relay: Relay, brand_id: int, buyer_id: int) -> Follower:
    def run(s: Session) -> Follower:
        query = select(Follower).where(Follower.brand_id == brand_id, Follower.buyer_id == buyer_id)
        return s.exec(query).one()

    return relay.db.call(run)


# --- driving the dispatcher and reading the sink -----------------------------


def times(first: datetime, last: datetime, every: timedelta) -> list[datetime]:
    out = []
    t = first
    while t <= last:
        out.append(t)
        t += every
    return out


async def run_pass(relay: Relay, sink: Sink, now: datetime) -> tuple[PassReport, list[Received]]:
    """One pass at ``now``; waits until the sink has every message it queued."""
    assert relay.dispatcher is not None
    before = len(sink.messages)
    result = await relay.dispatcher.pass_once(now)
    await sink.wait_for(before + result.outcomes.get(SendStatus.SENT, 0))
    return result, sink.messages[before:]


async def drive(relay: Relay, sink: Sink, moments: Iterable[datetime]) -> list[PassReport]:
    return [(await run_pass(relay, sink, now))[0] for now in moments]


def campaign_of(received: Received) -> int:
    return int(received.message["X-Marketplace-Campaign"])


def recipient_of(received: Received) -> str:
    assert len(received.rcpt_tos) == 1, received.rcpt_tos
    return received.rcpt_tos[0]


def by_recipient(messages: Iterable[Received]) -> dict[str, Counter[int]]:
    """Recipient → how many messages of each campaign it received."""
    out: dict[str, Counter[int]] = {}
    for m in messages:
        out.setdefault(recipient_of(m), Counter())[campaign_of(m)] += 1
    return out


async def settled(relay: Relay, sink: Sink, expected: int, *others: Relay) -> list[Received]:
    """The sink's messages once ``expected`` arrived and the relay (and ``others``)
    have nothing left to send: exactly ``expected``, none still to come."""
    await sink.wait_for(expected)
    await wait_idle(relay, *others)
    assert len(sink.messages) == expected, [recipient_of(m) for m in sink.messages]
    return sink.messages


def advance_to(target: datetime) -> datetime:
    """Move the relay's clock to (just after) ``target``; returns the new now."""
    gap = target - clock.now()
    if gap > timedelta(0):
        clock.advance(gap)
    return clock.now()


# --- 1. the five-day spread ---------------------------------------------------


async def test_one_campaign_spreads_over_its_five_day_window(relay: Relay, sink: Sink) -> None:
    emails = [f"spread{i:02d}@buyers.example" for i in range(30)]
    world = add_brand(relay, "Lotus Tea House", emails)
    start_on = first_day()
    campaign = approved_campaign(relay, world, start_on)
    window = rules.delivery_window(start_on)
    slot = {e: rules.slot(world.brand_id, world.buyers[e], window) for e in emails}
    assert relay.dispatcher is not None

    await relay.dispatcher.pass_once(clock.now())
    assert status(relay, campaign) is CampaignStatus.SCHEDULED

    step = 12 * HOUR
    previous = clock.now()
    delivered_at_step: dict[int, set[str]] = {}
    for k in range(-1, 12):  # from 12 h before the window to 12 h after it
        now = advance_to(window.start + k * step)
        result, new = await run_pass(relay, sink, now)
        got = [recipient_of(m) for m in new]
        assert len(got) == len(set(got)), f"a follower got two messages at step {k}"
        expected = {e for e, t in slot.items() if previous < t <= now}
        assert set(got) == expected, f"step {k} ({now:%Y-%m-%d %H:%M})"
        assert all(campaign_of(m) == campaign for m in new)
        delivered_at_step[k] = set(got)
        if k == 0:
            assert result.started == [campaign]
        if 0 <= k < 10:
            assert status(relay, campaign) is CampaignStatus.SENDING, f"step {k}"
        previous = now

    # Nothing before the window opens nor after it closes; no burst.
    assert delivered_at_step[-1] == set() and delivered_at_step[11] == set()
    assert max(len(got) for got in delivered_at_step.values()) <= len(emails) // 2
    # Each of the five days gets messages (step k covers ((k-1)·12 h, k·12 h]).
    days = {(k - 1) // 2 for k, got in delivered_at_step.items() if got and k >= 1}
    assert days == {0, 1, 2, 3, 4}

    # The plan: one send per follower, at its slot, inside the window.
    planned = sends(relay, campaign)
    assert len(planned) == len(emails)
    by_buyer = {s.buyer_id: s for s in planned}
    for address in emails:
        send = by_buyer[world.buyers[address]]
        assert as_utc(send.due_at) == slot[address]
        assert window.start <= as_utc(send.due_at) < window.end
        assert send.status in HANDED_OVER

    received = await settled(relay, sink, len(emails))
    assert by_recipient(received) == {e: Counter({campaign: 1}) for e in emails}
    assert status(relay, campaign) is CampaignStatus.COMPLETED

    async def all_delivered() -> bool:
        return bool(report(relay, campaign)["delivered"] == len(emails))

    await wait_until_async(all_delivered)
    summary = report(relay, campaign)
    assert summary["planned"] == summary["sent"] == summary["delivered"] == len(emails)
    assert summary["pending"] == summary["bounced"] == summary["skipped_7_days"] == 0


# --- 2. the 7-day rule --------------------------------------------------------


@pytest.mark.parametrize("later_created_first", [False, True], ids=["in_order", "reversed"])
async def test_overlapping_campaigns_of_a_brand_reach_each_customer_once(
    relay: Relay, sink: Sink, later_created_first: bool
) -> None:
    early = [f"early{i}@buyers.example" for i in range(6)]
    late = [f"late{i}@buyers.example" for i in range(4)]
    world = add_brand(relay, "Saigon Ceramics", early)
    d = first_day()
    if later_created_first:
        second = approved_campaign(relay, world, d + timedelta(days=2), subject="Second")
        first = approved_campaign(relay, world, d, subject="First")
    else:
        first = approved_campaign(relay, world, d, subject="First")
        second = approved_campaign(relay, world, d + timedelta(days=2), subject="Second")

    start = rules.day_start(d)
    (started, _new) = await run_pass(relay, sink, start)
    assert started.started == [first]
    follow(relay, world, late)  # they follow after the first campaign started

    await drive(relay, sink, times(start + 6 * HOUR, start + 8 * DAY, 6 * HOUR))
    received = await settled(relay, sink, len(early) + len(late))
    assert by_recipient(received) == {
        **{e: Counter({first: 1}) for e in early},
        **{e: Counter({second: 1}) for e in late},
    }

    assert status(relay, first) is CampaignStatus.COMPLETED
    assert status(relay, second) is CampaignStatus.COMPLETED
    one, two = report(relay, first), report(relay, second)
    assert (one["planned"], one["sent"], one["skipped_7_days"]) == (len(early), len(early), 0)
    assert two["planned"] == len(early) + len(late)
    assert two["sent"] == len(late)
    assert two["skipped_7_days"] == len(early)
    assert two["skipped_for"] == {str(first): len(early)}


async def test_seven_days_apart_reach_again_six_do_not_and_brands_are_apart(
    relay: Relay, sink: Sink
) -> None:
    customers = [f"shared{i}@buyers.example" for i in range(8)]
    silk = add_brand(relay, "Hanoi Silk", customers)
    coffee = add_brand(relay, "Mekong Coffee", customers)
    d = first_day()
    # Created latest first: the order of creation must not matter.
    silk_later = approved_campaign(relay, silk, d + timedelta(days=7), subject="Silk again")
    coffee_later = approved_campaign(relay, coffee, d + timedelta(days=6), subject="Coffee again")
    silk_first = approved_campaign(relay, silk, d, subject="Silk")
    coffee_first = approved_campaign(relay, coffee, d, subject="Coffee")

    start = rules.day_start(d)
    await drive(relay, sink, times(start, start + 13 * DAY, 12 * HOUR))
    received = await settled(relay, sink, 3 * len(customers))
    expected = Counter({silk_first: 1, silk_later: 1, coffee_first: 1})
    assert by_recipient(received) == dict.fromkeys(customers, expected)

    # Exactly 7 days between a customer's two messages of the brand: the boundary.
    first_due = {s.buyer_id: as_utc(s.due_at) for s in sends(relay, silk_first)}
    for s in sends(relay, silk_later):
        assert as_utc(s.due_at) - first_due[s.buyer_id] == timedelta(days=7)

    later = report(relay, silk_later)
    assert (later["sent"], later["skipped_7_days"]) == (len(customers), 0)
    six = report(relay, coffee_later)
    assert (six["planned"], six["sent"]) == (len(customers), 0)
    assert six["skipped_7_days"] == len(customers)
    assert six["skipped_for"] == {str(coffee_first): len(customers)}
    for campaign in (silk_first, silk_later, coffee_first, coffee_later):
        assert status(relay, campaign) is CampaignStatus.COMPLETED


# --- 3. several relays on one database ----------------------------------------


async def test_two_relays_sending_overlapping_campaigns_send_each_customer_one(
    relay: Relay, sink: Sink, config: RelayConfig
) -> None:
    other = Relay(config)  # the same database and archive, its own writer and worker
    await other.start()
    try:
        customers = [f"busy{i:02d}@buyers.example" for i in range(16)]
        world = add_brand(relay, "Da Nang Leather", customers)
        d = first_day()
        first = approved_campaign(relay, world, d, subject="First")
        second = approved_campaign(relay, world, d + timedelta(days=2), subject="Second")
        dispatchers = [relay.dispatcher, other.dispatcher]
        assert all(dispatchers)

        start = rules.day_start(d)
        reports: list[PassReport] = []
        # At the start of each campaign, then once when everything left is due at once.
        for now in (start, start + 2 * DAY, start + 3 * DAY, start + 8 * DAY):
            before = len(sink.messages)
            both = await asyncio.gather(*(x.pass_once(now) for x in dispatchers if x))
            reports += both
            queued = sum(r.outcomes.get(SendStatus.SENT, 0) for r in both)
            await sink.wait_for(before + queued)

        assert sorted(c for r in reports for c in r.started) == [first, second]
        assert sum(r.outcomes.get(SendStatus.SENT, 0) for r in reports) == len(customers)
        received = await settled(relay, sink, len(customers), other)
        counts = by_recipient(received)
        assert sorted(counts) == sorted(customers)
        assert all(sum(c.values()) == 1 for c in counts.values()), counts

        def queued_rows(s: Session) -> tuple[list[int | None], list[int]]:
            campaign_messages = s.exec(
                select(Message.id).where(Message.direction == Direction.CAMPAIGN)
            ).all()
            deliveries = s.exec(select(Delivery.message_id)).all()
            return list(campaign_messages), list(deliveries)

        messages, deliveries = relay.db.call(queued_rows)
        assert len(messages) == len(customers)
        assert sorted(deliveries) == sorted(m for m in messages if m is not None)
        sent = [s for c in (first, second) for s in sends(relay, c) if s.status in HANDED_OVER]
        assert len(sent) == len(customers)
        assert len({s.message_id for s in sent}) == len(sent)
        assert len({s.buyer_id for s in sent}) == len(customers)
        one, two = report(relay, first), report(relay, second)
        assert one["sent"] + two["sent"] == len(customers)
        assert one["skipped_7_days"] + two["skipped_7_days"] == len(customers)
        assert one["pending"] == two["pending"] == 0
    finally:
        await other.stop()


# --- 4. a promotion cancelled behind the relay's back -------------------------


async def test_promotion_cancelled_while_sending_suspends_and_withdraws_the_rest(
    relay: Relay, sink: Sink
) -> None:
    customers = [f"promo{i:02d}@buyers.example" for i in range(12)]
    world = add_brand(relay, "Hoi An Tailors", customers)
    d = first_day()
    start = rules.day_start(d)

    def add_promotion(s: Session) -> int:
        promotion = catalog.add_promotion(
            s,
            world.product_id,
            kind=PromotionKind.PERCENT_OFF,
            discount="20",
            starts_at=start - DAY,
            ends_at=start + 8 * DAY,
            approved=True,
        )
        assert promotion.id is not None
        return promotion.id

    promotion_id = relay.db.write(add_promotion)
    campaign = approved_campaign(
        relay, world, d, kind=CampaignKind.PROMOTION, promotion_id=promotion_id
    )
    await run_pass(relay, sink, start)
    slots = sorted(as_utc(s.due_at) for s in sends(relay, campaign))
    assert len(slots) == len(customers)

    _result, new = await run_pass(relay, sink, slots[3])  # the first four go out
    assert len(new) == 4
    assert status(relay, campaign) is CampaignStatus.SENDING

    def cancel_behind_the_relays_back(s: Session) -> None:
        s.execute(
            update(Promotion)
            .where(col(Promotion.id) == promotion_id)
            .values(status=PromotionStatus.CANCELLED)
        )

    relay.db.write(cancel_behind_the_relays_back)
    result, new = await run_pass(relay, sink, slots[4])
    assert new == []
    assert result.suspended == [campaign]
    assert result.outcomes.get(SendStatus.SENT, 0) == 0
    assert status(relay, campaign) is CampaignStatus.SUSPENDED
    handed_over = Counter(s.status in HANDED_OVER for s in sends(relay, campaign))
    assert handed_over == {True: 4, False: len(customers) - 4}
    assert {s.status for s in sends(relay, campaign) if s.status not in HANDED_OVER} == {
        SendStatus.WITHDRAWN
    }

    later = await drive(relay, sink, times(slots[4] + HOUR, start + 6 * DAY, 12 * HOUR))
    assert all(not r.outcomes for r in later)
    await settled(relay, sink, 4)
    summary = report(relay, campaign)
    assert (summary["sent"], summary["withdrawn"], summary["pending"]) == (
        4,
        len(customers) - 4,
        0,
    )


# --- 5. headers, DKIM, and the address only in To ------------------------------


def without_header(data: bytes, name: bytes) -> bytes:
    """``data`` without the top-level header field ``name`` (continuation lines too)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(name.lower() + b":")
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def header_field(data: bytes, name: bytes) -> bytes:
    """The raw top-level header field ``name``, unfolded."""
    head = data.partition(b"\r\n\r\n")[0]
    fields = re.split(rb"\r\n(?![ \t])", head)
    found = [f for f in fields if f.lower().startswith(name.lower() + b":")]
    assert len(found) == 1, found
    return re.sub(rb"\r\n[ \t]+", b" ", found[0])


def address_shown(data: bytes, address: str) -> bool:
    """Whether ``address`` is in the bytes, by a plain search or as a client shows them."""
    return address.lower().encode() in data.lower() or leaks(data, [address])


UNSUBSCRIBE_LINK = re.compile(r"^<(http://127\.0\.0\.1:(\d+)/unsubscribe/([a-z0-9]+))>$")


async def test_campaign_message_headers_dkim_and_footer(
    relay: Relay, sink: Sink, dkim_key: tuple[Path, str]
) -> None:
    customers = ["lan.pham@buyers.example", "minh@buyers.example"]
    world = add_brand(relay, "Phu Quoc Pearls", customers)
    relay.db.write(lambda s: setattr(directory.find_buyer(s, customers[0]), "name", "Phạm Thị Lan"))
    d = first_day()
    campaign = approved_campaign(relay, world, d, subject="Pearls for Tết")
    start = rules.day_start(d)
    await drive(relay, sink, [start, start + 5 * DAY])
    received = await settled(relay, sink, 2)
    assert relay.unsubscribe is not None
    domain = relay.config.marketplace.domain
    records = {f"relay._domainkey.{domain}.".encode(): dkim_key[1].encode()}

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    urls = set()
    for got in received:
        address = recipient_of(got)
        other = next(c for c in customers if c != address)
        msg = got.message
        assert campaign_of(got) == campaign

        link = UNSUBSCRIBE_LINK.match(str(msg["List-Unsubscribe"]).strip())
        assert link, msg["List-Unsubscribe"]
        url = link.group(1)
        assert int(link.group(2)) == relay.unsubscribe.server.port
        urls.add(url)
        assert str(msg["List-Unsubscribe-Post"]).strip() == "List-Unsubscribe=One-Click"

        assert dkim.verify(got.data, dnsfunc=dns)
        signature = header_field(got.data, b"dkim-signature").split(b":", 1)[1]
        tags = dkim.util.parse_tag_value(re.sub(rb"\s+", b"", signature))
        signed = tags[b"h"].lower().split(b":")
        assert b"list-unsubscribe" in signed and b"list-unsubscribe-post" in signed
        assert tags[b"d"] == domain.encode()

        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert isinstance(parts[0], EmailMessage) and isinstance(parts[1], EmailMessage)
        text, page = parts[0].get_content(), parts[1].get_content()
        footer = re.search(r"Unsubscribe from [^\n]*'s emails: (\S+)", text)
        assert footer and footer.group(1) == url
        anchor = re.search(r'<a href="([^"]+)">Unsubscribe from', page)
        assert anchor and html.unescape(anchor.group(1)) == url

        # The address in To, and nowhere else (decoded parts included).
        to = msg["To"]
        assert [a.addr_spec for a in to.addresses] == [address]
        rest = without_header(got.data, b"to")
        assert not address_shown(rest, address)
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                assert address not in str(part.get_content()).lower()
        assert not address_shown(got.data, other)
    assert len(urls) == 2


# --- 6. one-click unsubscribe over HTTP, and the global opt-out ---------------


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, str]:
    """A real HTTP request (no proxy): (status, body)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


async def test_one_click_unsubscribe_and_opt_out_stop_campaign_mail(
    relay: Relay, sink: Sink
) -> None:
    u, v, w = "uyen@buyers.example", "vinh@buyers.example", "wendy@buyers.example"
    flowers = add_brand(relay, "Dalat Flowers", [u, v])
    lanterns = add_brand(relay, "Hue Lanterns", [u, w])
    d = first_day()
    flowers_1 = approved_campaign(relay, flowers, d, subject="Spring flowers")
    lanterns_1 = approved_campaign(relay, lanterns, d, subject="Lanterns")
    start = rules.day_start(d)
    await run_pass(relay, sink, start)
    # The global opt-out, after the campaign started and before w's turn.
    relay.db.write(lambda s: directory.set_opt_out(s, w, True))
    await run_pass(relay, sink, start + 5 * DAY)
    received = await settled(relay, sink, 3)
    assert by_recipient(received) == {
        u: Counter({flowers_1: 1, lanterns_1: 1}),
        v: Counter({flowers_1: 1}),
    }
    assert report(relay, lanterns_1)["opted_out"] == 1
    (from_flowers,) = [m for m in received if recipient_of(m) == u and campaign_of(m) == flowers_1]
    link = UNSUBSCRIBE_LINK.match(str(from_flowers.message["List-Unsubscribe"]).strip())
    assert link
    url = link.group(1)

    # The next campaigns, a week later, start before u unsubscribes.
    flowers_2 = approved_campaign(relay, flowers, d + timedelta(days=7), subject="Summer")
    lanterns_2 = approved_campaign(relay, lanterns, d + timedelta(days=7), subject="More")
    second_start = rules.day_start(d + timedelta(days=7))
    first_pass, new = await run_pass(relay, sink, second_start)
    assert sorted(first_pass.started) == sorted([flowers_2, lanterns_2]) and new == []

    code, page = await asyncio.to_thread(http, "GET", url)
    assert code == 200
    assert "<form" in page and "Dalat Flowers" in page
    assert follower_row(relay, flowers.brand_id, flowers.buyers[u]).unsubscribed_at is None

    unknown = url.rsplit("/", 1)[0] + "/" + "z" * len(link.group(3))
    for method, body in (("GET", None), ("POST", b"List-Unsubscribe=One-Click")):
        code, _page = await asyncio.to_thread(http, method, unknown, body)
        assert code == 404, method

    code, page = await asyncio.to_thread(http, "POST", url, b"List-Unsubscribe=One-Click")
    assert code == 200, page
    row = follower_row(relay, flowers.brand_id, flowers.buyers[u])
    assert row.unsubscribed_at is not None
    assert row.unsubscribed_campaign_id == flowers_1
    assert follower_row(relay, lanterns.brand_id, lanterns.buyers[u]).unsubscribed_at is None
    code, _page = await asyncio.to_thread(http, "POST", url, b"List-Unsubscribe=One-Click")
    assert code == 200  # again: nothing changes

    await run_pass(relay, sink, second_start + 5 * DAY)
    received = await settled(relay, sink, 5)
    assert by_recipient(received[3:]) == {
        u: Counter({lanterns_2: 1}),  # still follows the other brand
        v: Counter({flowers_2: 1}),
    }
    assert report(relay, flowers_2)["unsubscribed"] == 1
    assert report(relay, flowers_1)["unsubscribed_here"] == 1
    assert report(relay, lanterns_2)["opted_out"] == 1

    # A campaign planned after the unsubscribe does not reach u either.
    flowers_3 = approved_campaign(relay, flowers, d + timedelta(days=14), subject="Autumn")
    third_start = rules.day_start(d + timedelta(days=14))
    await drive(relay, sink, [third_start, third_start + 5 * DAY])
    received = await settled(relay, sink, 6)
    assert by_recipient(received[5:]) == {v: Counter({flowers_3: 1})}
    assert (report(relay, flowers_3)["planned"], report(relay, flowers_3)["sent"]) == (1, 1)


# --- 7. a bounce is counted, and nobody is told -------------------------------


async def send_whole_campaign(relay: Relay, world: World) -> int:
    """An approved campaign of ``world``, started and every message queued (a
    pass at its start, one at its end); its id."""
    d = first_day()
    campaign = approved_campaign(relay, world, d)
    start = rules.day_start(d)
    assert relay.dispatcher is not None
    for now in (start, start + 5 * DAY):
        await relay.dispatcher.pass_once(now)
    return campaign


async def test_a_refused_campaign_message_counts_as_bounced_without_a_notice(
    relay: Relay, sink: Sink
) -> None:
    customers = [f"bounce{i}@buyers.example" for i in range(3)]
    refused = customers[1]
    sink.handler.refuse[refused] = "550 5.1.1 No such user here"
    world = add_brand(relay, "Can Tho Rice", customers)
    campaign = await send_whole_campaign(relay, world)

    async def outcome_known() -> bool:
        summary = report(relay, campaign)
        return bool(summary["bounced"] == 1 and summary["delivered"] == 2)

    await wait_until_async(outcome_known)
    received = await settled(relay, sink, 2)
    assert sorted(recipient_of(m) for m in received) == sorted(set(customers) - {refused})
    assert all(m.mail_from.startswith("bounce+") for m in received)  # no notice (null sender)
    summary = report(relay, campaign)
    assert (summary["planned"], summary["sent"], summary["delivered"], summary["bounced"]) == (
        3,
        3,
        2,
        1,
    )
    notices = relay.db.call(
        lambda s: s.exec(select(Message.id).where(Message.direction == Direction.NOTICE)).all()
    )
    assert list(notices) == []
    (bounced,) = [s for s in sends(relay, campaign) if s.status is SendStatus.BOUNCED]
    assert bounced.buyer_id == world.buyers[refused]


async def test_a_dsn_for_a_delivered_campaign_message_counts_it_bounced_without_a_notice(
    relay: Relay, sink: Sink
) -> None:
    """The recipient's server took the message, then sent a DSN to its VERP
    return path: the send is bounced (the queue tells the campaigns, which it
    does not import), and, campaign mail having no sender, nobody is told."""
    customers = [f"returned{i}@buyers.example" for i in range(2)]
    world = add_brand(relay, "Da Lat Tea", customers)
    campaign = await send_whole_campaign(relay, world)

    async def delivered() -> bool:
        return bool(report(relay, campaign)["delivered"] == 2)

    await wait_until_async(delivered)
    returned = next(m for m in sink.messages if recipient_of(m) == customers[0])
    verp = returned.mail_from
    assert verp.startswith("bounce+")
    bounce = dsn(verp, action="failed", status="5.1.1", recipient=customers[0])
    await send_null_sender(relay, bounce, recipients=[verp])

    async def bounced() -> bool:
        return bool(report(relay, campaign)["bounced"] == 1)

    await wait_until_async(bounced)
    assert {s.buyer_id: s.status for s in sends(relay, campaign)} == {
        world.buyers[customers[0]]: SendStatus.BOUNCED,
        world.buyers[customers[1]]: SendStatus.DELIVERED,
    }
    await settled(relay, sink, 2)  # no notice went out
    notices = relay.db.call(
        lambda s: s.exec(select(Message.id).where(Message.direction == Direction.NOTICE)).all()
    )
    assert list(notices) == []


async def test_the_report_outlives_the_archive_retention(relay: Relay, sink: Sink) -> None:
    """Purging old campaign messages (``archive.retention_days``) keeps the send
    records and the report as they were; the records just lose their message."""
    customers = [f"kept{i}@buyers.example" for i in range(3)]
    world = add_brand(relay, "Hue Silk", customers)
    campaign = await send_whole_campaign(relay, world)

    async def delivered() -> bool:
        return bool(report(relay, campaign)["delivered"] == 3)

    await wait_until_async(delivered)
    before = report(relay, campaign)

    purged = await asyncio.to_thread(
        retention.purge, relay.db, relay.archive, 30, now=clock.now() + 40 * DAY
    )
    assert purged.messages == 3
    assert report(relay, campaign) == before
    assert [s.message_id for s in sends(relay, campaign)] == [None] * 3
    assert {s.status for s in sends(relay, campaign)} == {SendStatus.DELIVERED}


# --- a campaign the rules accept must not stop the others ---------------------


async def test_a_subject_the_rules_accept_does_not_stall_other_campaigns(
    relay: Relay, sink: Sink
) -> None:
    """U+2028 (a line separator, not "\\n" or "\\r") passes the one-line subject
    rule; whatever the relay then makes of that campaign, the other brand's
    campaign, due at the same time, must still go out."""
    customers = [f"kite{i}@buyers.example" for i in range(3)]
    shells = add_brand(relay, "Nha Trang Shells", customers)
    kites = add_brand(relay, "Vung Tau Kites", customers)
    d = first_day()
    with contextlib.suppress(catalog.CampaignError):  # refused by the rules: fine too
        approved_campaign(relay, shells, d, subject="Shells\u2028half price")
    campaign = approved_campaign(relay, kites, d, subject="Kites for the beach")
    start = rules.day_start(d)
    await drive(relay, sink, [start, start + 5 * DAY])
    kite_messages = [m for m in sink.messages if campaign_of(m) == campaign]
    assert by_recipient(kite_messages) == {c: Counter({campaign: 1}) for c in customers}
    assert status(relay, campaign) is CampaignStatus.COMPLETED


# --- 8. the renderer: the address in To only ----------------------------------


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    config = make_config(tmp_path_factory.mktemp("render"), sink_port=25)
    return Renderer(config.with_unsubscribe_url("https://marketplace.example.com/mail"))


def content_of(brand_name: str, subject: str, text: str, titles: list[str]) -> Content:
    brand = Brand(id=7, name=brand_name, registered=True, store_page=True)
    products = [
        Product(id=i, brand_id=7, sku=f"SKU{i}", title=t, price="9.99", description=t[::-1])
        for i, t in enumerate(titles, start=1)
    ]
    campaign = Campaign(
        id=11,
        brand_id=7,
        kind=CampaignKind.NEW_PRODUCT,
        main_product_id=1,
        subject=subject,
        content=text,
        start_on=date(2030, 1, 1),
    )
    return Content(campaign, brand, products, None, None)


def no_address(text: str) -> bool:
    return "@" not in text and not addresses.ANY_ADDRESS.search(text)


brand_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=300).filter(no_address)
# Header text without line-breaking characters: those are a matter of their own
# (``test_a_subject_the_rules_accept_does_not_stall_other_campaigns``).
one_line = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1, max_size=80
).filter(lambda t: no_address(t) and t.strip() != "")
recipients = (
    st.emails()
    .map(addresses.normalize)
    .filter(lambda a: a.isascii() and "marketplace.example.com" not in a)
)
"""ASCII addresses (non-ASCII ones: ``test_a_non_ascii_address_is_written_as_it_is_in_to``)."""


@st.composite
def recipient_and_name(draw: st.DrawFn) -> tuple[str, str]:
    """A follower's address and a name, often one that looks like an address."""
    address = draw(recipients)
    local, _, domain = address.rpartition("@")
    other = draw(st.emails())
    words = draw(st.text(max_size=20))
    name = draw(
        st.sampled_from(
            [
                words,
                address,
                address.upper(),
                f"{words} <{address}>",
                f"{address} ({words})",
                f"mailto:{address}",
                f"{local} @ {domain}",
                f"{words} {other}",
                other,
                local,
                f"{local} at {domain}",
            ]
        )
    )
    return address, name


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    who=recipient_and_name(),
    brand_name=one_line,
    subject=one_line,
    text=brand_text,
    titles=st.lists(one_line, min_size=1, max_size=5),
)
def test_rendered_message_shows_the_address_in_to_only(
    renderer: Renderer,
    who: tuple[str, str],
    brand_name: str,
    subject: str,
    text: str,
    titles: list[str],
) -> None:
    address, name = who
    data, _message_id = renderer.render(
        content_of(brand_name, subject, text, titles), Recipient(address, name, "t" * 32)
    )
    to = header_field(data, b"to")
    assert address.encode() in to.lower()
    rest = without_header(data, b"to")
    assert b"\r\nto:" not in rest.lower().partition(b"\r\n\r\n")[0]
    assert address.encode() not in rest.lower()
    assert not leaks(rest, [address])


@pytest.mark.parametrize(
    "name",
    [
        "lan.pham%40buyers.example",
        "lan.pham&#64;buyers.example",
        "lan.pham=40buyers.example",
        "lan.pham&commat;buyers.example",
    ],
)
def test_a_name_spelling_the_address_encoded_is_left_out_not_refused(
    renderer: Renderer, name: str
) -> None:
    """Names that spell the follower's address encoded look like an address too:
    the greeting must leave them out, not make the message unsendable."""
    address = "lan.pham@buyers.example"
    data, _ = renderer.render(
        content_of("Lotus", "New tea", "Fresh leaves.", ["Tea"]), Recipient(address, name, "t" * 32)
    )
    assert not leaks(without_header(data, b"to"), [address])


@pytest.mark.parametrize(
    "address", ["lan@hà-nội.example", "lân@buyers.example"], ids=["idn_domain", "utf8_local"]
)
def test_a_non_ascii_address_is_written_as_it_is_in_to(renderer: Renderer, address: str) -> None:
    """Buyers' addresses may be internationalised (the relay delivers with SMTPUTF8):
    the campaign's To must carry the address itself, not RFC 2047 words inside it,
    which RFC 2047 §5 forbids in an addr-spec."""
    data, _ = renderer.render(
        content_of("Lotus", "New tea", "Fresh leaves.", ["Tea"]),
        Recipient(address, "Lan", "t" * 32),
    )
    to = header_field(data, b"to").decode("utf-8")  # raw UTF-8 (RFC 6532), not encoded words
    assert "=?" not in to
    ((_name, addr_spec),) = getaddresses([to.partition(":")[2]])
    assert addresses.normalize(addr_spec) == address
