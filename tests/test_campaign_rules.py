"""The marketplace's rules for brand campaigns (``relay.campaigns``), on a real database.

What these tests protect, rule by rule:

- the 72-hour review lead, at creation and again at submission;
- a themed campaign's start date inside its shopping event (both ends included);
- a promotion's period and eligibility, and the delivery window cut to it;
- the date picker's colours, collisions and follower counts (``calendar``);
- moderation: a rejection needs a reason and is final, a late approval is refused,
  and every status change is in the history;
- a promotion rejected or cancelled before its campaign starts suspends the
  campaign, which then sends nothing; one whose campaign is sending stays;
- who may send campaigns, which products they may show, and no email addresses;
- the 7-day ledger: a brand's first contact with a customer is granted, a second
  within 7 days is not;
- cancelling a sending campaign withdraws the rest of its messages.

Every test that takes ``db`` runs on SQLite and on PostgreSQL (``database_url``).
The rules take an explicit ``now``; the tests pass fixed instants so that every
date below can be read off the test, except where the relay's own clock
(``relay.core.clock``) is the point.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, func, select

from relay.campaigns import calendar, catalog, dispatch, ledger, lifecycle, report, rules
from relay.campaigns.catalog import CampaignError
from relay.campaigns.dispatch import Dispatcher
from relay.campaigns.lifecycle import Draft
from relay.campaigns.models import (
    BrandContact,
    CampaignKind,
    CampaignSend,
    CampaignStatus,
    Promotion,
    PromotionKind,
    PromotionStatus,
    SendStatus,
)
from relay.campaigns.render import Renderer
from relay.core import clock
from relay.core.config import DatabaseConfig
from relay.storage.archive import Archive
from relay.storage.db import Database
from relay.storage.models import Message
from tests.helpers import make_config

NOW = datetime(2026, 12, 1, tzinfo=UTC)
"""When the campaigns of most tests are created and reviewed."""


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- fixtures and builders ----------------------------------------------------


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The relay's database, migrated, on the backend of ``database_url``."""
    database = Database(DatabaseConfig(url=database_url))
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def dispatcher(tmp_path: Path, database_url: str, db: Database) -> Dispatcher:
    """The dispatcher of ``relay serve``, run one pass at a time with explicit times.

    It renders, archives and queues real messages (nothing is delivered: no
    outbound worker runs)."""
    config = make_config(tmp_path, sink_port=2525, database_url=database_url)
    return Dispatcher(config, db, Archive(config.archive.path), renderer=Renderer(config))


@dataclass(frozen=True, slots=True)
class Shop:
    brand_id: int
    product_ids: list[int]
    buyer_ids: list[int]


def open_shop(
    session: Session,
    name: str = "Lotus Tea",
    *,
    followers: int = 10,
    products: int = 6,
    registered: bool = True,
    store_page: bool = True,
) -> Shop:
    """A brand with ``followers`` followers and ``products`` products."""
    brand = catalog.add_brand(session, name=name, registered=registered, store_page=store_page)
    assert brand.id is not None
    slug = name.lower().replace(" ", "-")
    buyer_ids = [
        catalog.follow(session, brand.id, f"fan{i}@{slug}.example", name=f"Fan {i}").buyer_id
        for i in range(followers)
    ]
    product_ids = []
    for i in range(products):
        product = catalog.add_product(
            session,
            brand.id,
            sku=f"{slug}-{i}",
            title=f"{name} product {i}",
            price="12 USD",
            description="Hand-picked leaves.",
        )
        assert product.id is not None
        product_ids.append(product.id)
    return Shop(brand.id, product_ids, buyer_ids)


def draft(shop: Shop, start_on: date, **changes: Any) -> Draft:
    """A valid spotlight on the shop's first product, with ``changes``."""
    values: dict[str, Any] = {
        "kind": CampaignKind.SPOTLIGHT,
        "main_product_id": shop.product_ids[0],
        "subject": "Winter teas are here",
        "content": "Our winter blends arrived this week.\n\nFree shipping on two tins.",
        "start_on": start_on,
    }
    values.update(changes)
    return Draft(**values)


def create(
    db: Database, shop: Shop, start_on: date, *, now: datetime | None = NOW, **changes: Any
) -> int:
    """A new draft (``now=None``: at the relay's clock); returns its id."""
    campaign = db.write(lifecycle.create, shop.brand_id, draft(shop, start_on, **changes), now=now)
    assert campaign.id is not None
    return campaign.id


def refusal(db: Database, fn: Any, *args: Any, **kw: Any) -> str:
    """The CampaignError message ``fn`` raises when written."""
    with pytest.raises(CampaignError) as raised:
        db.write(fn, *args, **kw)
    return str(raised.value)


def add_promotion(
    db: Database,
    product_id: int,
    starts_at: datetime,
    ends_at: datetime,
    status: PromotionStatus = PromotionStatus.APPROVED,
) -> int:
    """A 20 % promotion, taken to ``status`` the way the marketplace does."""
    promotion = db.write(
        catalog.add_promotion,
        product_id,
        kind=PromotionKind.PERCENT_OFF,
        discount="20",
        starts_at=starts_at,
        ends_at=ends_at,
        approved=status is not PromotionStatus.PENDING,
    )
    assert promotion.id is not None
    if status in (PromotionStatus.REJECTED, PromotionStatus.CANCELLED):
        db.write(catalog.set_promotion_status, promotion.id, status)
    return promotion.id


def status_of(db: Database, campaign_id: int) -> CampaignStatus:
    return db.call(lifecycle.get_campaign, campaign_id).status


def approve(db: Database, campaign_id: int, now: datetime = NOW) -> None:
    db.write(lifecycle.submit, campaign_id, now=now)
    db.write(lifecycle.review, campaign_id, approve=True, now=now)


def count_sends(session: Session, campaign_id: int | None = None) -> int:
    query = select(func.count()).select_from(CampaignSend)
    if campaign_id is not None:
        query = query.where(CampaignSend.campaign_id == campaign_id)
    return int(session.exec(query).one())


def count_messages(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(Message)).one())


def sends(session: Session, campaign_id: int) -> list[CampaignSend]:
    return list(
        session.exec(
            select(CampaignSend)
            .where(CampaignSend.campaign_id == campaign_id)
            .order_by(col(CampaignSend.due_at), col(CampaignSend.id))
        ).all()
    )


# --- 1. the 72-hour review lead -----------------------------------------------


@pytest.mark.parametrize(
    ("now", "earliest"),
    [
        (at(2026, 12, 1), date(2026, 12, 4)),  # exactly 72 h before 12-04 00:00
        (at(2026, 12, 1) + timedelta(seconds=1), date(2026, 12, 5)),
        (at(2026, 12, 1) + timedelta(microseconds=1), date(2026, 12, 5)),
        (at(2026, 11, 30, 23, 59), date(2026, 12, 4)),
        (at(2026, 12, 1, 12), date(2026, 12, 5)),
        (at(2026, 12, 31, 0, 1), date(2027, 1, 4)),  # across the year's end
        (datetime(2026, 12, 1), date(2026, 12, 4)),  # naive, as SQLite hands times back
    ],
)
def test_review_lead_earliest_start(now: datetime, earliest: date) -> None:
    """The first start date is the first 00:00 UTC at least 72 hours away; the day
    before it is refused, with a message naming the earliest date."""
    assert rules.earliest_start(now) == earliest
    assert rules.lead_problem(earliest, now) is None
    assert rules.lead_problem(earliest + timedelta(days=1), now) is None
    problem = rules.lead_problem(earliest - timedelta(days=1), now)
    assert problem is not None
    assert "72 hours" in problem
    assert f"the earliest start date is {earliest}" in problem


def test_create_refuses_a_start_inside_the_review_lead(db: Database) -> None:
    """``create`` applies the lead against its ``now``: 12-04 is fine at 00:00
    on 12-01, refused one second later with the earliest date (12-05) named."""
    shop = db.write(open_shop)
    assert create(db, shop, date(2026, 12, 4), now=NOW)
    message = refusal(
        db,
        lifecycle.create,
        shop.brand_id,
        draft(shop, date(2026, 12, 4)),
        now=NOW + timedelta(seconds=1),
    )
    assert "start date 2026-12-04" in message
    assert "72 hours" in message
    assert "the earliest start date is 2026-12-05" in message
    assert create(db, shop, date(2026, 12, 5), now=NOW + timedelta(seconds=1))
    assert len(db.call(lifecycle.list_campaigns, brand_id=shop.brand_id)) == 2


def test_submit_checks_the_lead_again_at_submission_time(db: Database) -> None:
    """A draft created in time may sit too long: two days later (the relay's
    clock moved on), submitting a start 4 days ahead is refused and it stays a
    draft; one 6 days ahead still goes to review."""
    shop = db.write(open_shop)
    today = clock.now()
    late = create(db, shop, (today + timedelta(days=4)).date(), now=None)
    in_time = create(db, shop, (today + timedelta(days=6)).date(), now=None)

    clock.advance(timedelta(days=2))
    message = refusal(db, lifecycle.submit, late)
    assert f"start date {(today + timedelta(days=4)).date()}" in message
    assert "72 hours" in message
    assert f"the earliest start date is {rules.earliest_start(clock.now())}" in message
    assert status_of(db, late) is CampaignStatus.DRAFT

    db.write(lifecycle.submit, in_time)
    assert status_of(db, in_time) is CampaignStatus.IN_REVIEW


# --- 2. shopping events -------------------------------------------------------


def test_start_date_within_the_shopping_event(db: Database) -> None:
    """A themed campaign starts on one of its event's days, both ends included;
    the day before and the day after are refused with the event named, and the
    date picker greys them with the same reason."""
    shop = db.write(open_shop)
    event = db.write(
        catalog.add_event,
        name="New Year Sale",
        starts_on=date(2027, 1, 10),
        ends_on=date(2027, 1, 15),
    )
    assert event.id is not None
    for day in (date(2027, 1, 10), date(2027, 1, 12), date(2027, 1, 15)):
        assert create(db, shop, day, event_id=event.id)
    for day in (date(2027, 1, 9), date(2027, 1, 16)):
        message = refusal(
            db, lifecycle.create, shop.brand_id, draft(shop, day, event_id=event.id), now=NOW
        )
        assert f"start date {day}" in message
        assert "outside the shopping event 'New Year Sale'" in message
        assert "(2027-01-10 to 2027-01-15)" in message

    days = db.call(
        calendar.calendar, shop.brand_id, date(2027, 1, 8), 10, now=NOW, event_id=event.id
    )
    # the three campaigns just created are drafts: they collide with nothing
    assert [(d.day.day, d.colour) for d in days] == [
        (8, "unavailable"),
        (9, "unavailable"),
        (10, "free"),
        (11, "free"),
        (12, "free"),
        (13, "free"),
        (14, "free"),
        (15, "free"),
        (16, "unavailable"),
        (17, "unavailable"),
    ]
    for d in days:
        if d.allowed:
            assert d.reasons == []
        else:
            assert len(d.reasons) == 1
            assert "outside the shopping event 'New Year Sale'" in d.reasons[0]


# --- 3. promotions --------------------------------------------------------------


def test_promotion_eligibility(db: Database) -> None:
    """For a campaign on product P starting 2027-01-10 (seen on 2026-12-20), a
    promotion is eligible only if it is P's, approved, not ended and overlapping
    the delivery window (01-10 to 01-15); ``eligible_promotions`` also wants the
    start date inside its period, and lists exactly the eligible ones."""
    shop = db.write(open_shop)
    main, other = shop.product_ids[0], shop.product_ids[1]
    start, now = date(2027, 1, 10), at(2026, 12, 20)
    span = (at(2027, 1, 9), at(2027, 1, 20))
    good = add_promotion(db, main, *span)
    also_good = add_promotion(db, main, at(2027, 1, 10, 23, 59), at(2027, 1, 11))
    others = add_promotion(db, other, *span)
    pending = add_promotion(db, main, *span, status=PromotionStatus.PENDING)
    rejected = add_promotion(db, main, *span, status=PromotionStatus.REJECTED)
    cancelled = add_promotion(db, main, *span, status=PromotionStatus.CANCELLED)
    ended = add_promotion(db, main, at(2026, 12, 1), at(2026, 12, 20))
    after_window = add_promotion(db, main, at(2027, 1, 15), at(2027, 1, 25))
    inside_window = add_promotion(db, main, at(2027, 1, 12), at(2027, 1, 25))

    def problems(promotion_id: int) -> list[str]:
        promotion = db.call(catalog.get_promotion, promotion_id)
        return rules.promotion_problems(promotion, main_product_id=main, start_on=start, now=now)

    assert problems(good) == []
    assert problems(also_good) == []
    assert problems(others) == [f"promotion {others} is for another product"]
    assert problems(pending) == [f"promotion {pending} is pending (not approved yet)"]
    assert problems(rejected) == [f"promotion {rejected} is rejected"]
    assert problems(cancelled) == [f"promotion {cancelled} is cancelled"]
    assert f"promotion {ended} has ended (2026-12-20)" in problems(ended)
    # starting exactly when the window ends (01-15 00:00) is not overlapping it
    assert problems(after_window) == [
        f"promotion {after_window} (2027-01-15 to 2027-01-25) does not overlap the delivery"
        " window 2027-01-10 + 5 days"
    ]
    # overlaps the window, but the start date is outside its period
    assert problems(inside_window) == []
    period = rules.promotion_period_problem(start, db.call(catalog.get_promotion, inside_window))
    assert period is not None
    assert "outside promotion" in period

    eligible = db.call(catalog.eligible_promotions, main, start, now)
    assert [p.id for p in eligible] == [good, also_good]
    assert [p.id for p in db.call(catalog.eligible_promotions, other, start, now)] == [others]

    for refused, reason in (
        (others, "is for another product"),
        (pending, "is pending"),
        (rejected, "is rejected"),
        (cancelled, "is cancelled"),
        (ended, "has ended"),
        (after_window, "does not overlap the delivery window"),
        (inside_window, f"outside promotion {inside_window}'s period"),
    ):
        message = refusal(
            db,
            lifecycle.create,
            shop.brand_id,
            draft(shop, start, kind=CampaignKind.PROMOTION, promotion_id=refused),
            now=now,
        )
        assert reason in message, (refused, message)
    assert create(db, shop, start, now=now, kind=CampaignKind.PROMOTION, promotion_id=good)


def test_promotion_campaign_needs_a_promotion_within_its_period(db: Database) -> None:
    """A ``promotion`` campaign without a promotion is refused; its start date
    must lie in the promotion's period (the day overlapping it), and the date
    picker greys the other days."""
    shop = db.write(open_shop)
    promotion = add_promotion(db, shop.product_ids[0], at(2027, 1, 9, 18), at(2027, 1, 20))
    message = refusal(
        db,
        lifecycle.create,
        shop.brand_id,
        draft(shop, date(2027, 1, 10), kind=CampaignKind.PROMOTION),
        now=NOW,
    )
    assert "a promotion campaign needs a promotion" in message

    # 01-09 overlaps the promotion (from 18:00); 01-20 does not (it ends at 00:00)
    for day in (date(2027, 1, 9), date(2027, 1, 19)):
        assert create(db, shop, day, kind=CampaignKind.PROMOTION, promotion_id=promotion)
    for day in (date(2027, 1, 8), date(2027, 1, 20)):
        message = refusal(
            db,
            lifecycle.create,
            shop.brand_id,
            draft(shop, day, kind=CampaignKind.PROMOTION, promotion_id=promotion),
            now=NOW,
        )
        assert f"start date {day}" in message
        assert f"outside promotion {promotion}'s period" in message
        assert "(2027-01-09 18:00 UTC to 2027-01-20)" in message

    days = db.call(
        calendar.calendar,
        shop.brand_id,
        date(2027, 1, 8),
        14,
        now=NOW,
        promotion_id=promotion,
    )
    allowed = [d.day for d in days if d.allowed]
    assert allowed == [date(2027, 1, 9) + timedelta(days=i) for i in range(11)]


def test_delivery_window_is_cut_to_the_promotion() -> None:
    """5 days from 00:00 UTC of the start date, cut to the promotion's period, so
    no message shows a promotion that has not begun or has ended."""
    start = date(2027, 1, 10)

    def promotion(starts_at: datetime, ends_at: datetime) -> Promotion:
        return Promotion(
            id=1,
            product_id=1,
            kind=PromotionKind.PERCENT_OFF,
            discount="10",
            starts_at=starts_at,
            ends_at=ends_at,
            status=PromotionStatus.APPROVED,
        )

    plain = rules.delivery_window(start)
    assert (plain.start, plain.end) == (at(2027, 1, 10), at(2027, 1, 15))
    ends_early = rules.delivery_window(start, promotion(at(2027, 1, 1), at(2027, 1, 12, 18)))
    assert (ends_early.start, ends_early.end) == (at(2027, 1, 10), at(2027, 1, 12, 18))
    starts_late = rules.delivery_window(start, promotion(at(2027, 1, 11, 6), at(2027, 2, 1)))
    assert (starts_late.start, starts_late.end) == (at(2027, 1, 11, 6), at(2027, 1, 15))
    inside = rules.delivery_window(start, promotion(at(2027, 1, 11), at(2027, 1, 12)))
    assert (inside.start, inside.end) == (at(2027, 1, 11), at(2027, 1, 12))
    assert not inside.empty
    # stored naive (SQLite) is UTC too
    naive = rules.delivery_window(start, promotion(datetime(2027, 1, 9), datetime(2027, 1, 12, 18)))
    assert (naive.start, naive.end) == (at(2027, 1, 10), at(2027, 1, 12, 18))
    assert rules.delivery_window(start, promotion(at(2027, 1, 15), at(2027, 1, 20))).empty


# --- 4. the date picker ---------------------------------------------------------


def test_calendar_colours_collisions_and_followers(db: Database) -> None:
    """January 2027 seen on 2026-12-30 12:00 for a brand with 10 active followers
    and two campaigns that count, A (in review, starts 01-08) and B (approved,
    starts 01-20): 01-01 and 01-02 are inside the review lead, days less than 7
    days from A's or B's start are in conflict for 10 followers and name the
    campaign(s), the rest are free.  Its draft, rejected and cancelled campaigns
    and another brand's campaign collide with nothing; ``campaign_id`` leaves
    the campaign itself out."""
    shop = db.write(open_shop, followers=11)
    db.write(catalog.unfollow, shop.brand_id, "fan10@lotus-tea.example")
    a = create(db, shop, date(2027, 1, 8))
    db.write(lifecycle.submit, a, now=NOW)
    b = create(db, shop, date(2027, 1, 20))
    approve(db, b)

    # campaigns that reach nobody, all starting 01-28: 01-22 to 01-30 stay free
    db.write(lifecycle.create, shop.brand_id, draft(shop, date(2027, 1, 28)), now=NOW)
    rejected = create(db, shop, date(2027, 1, 28))
    db.write(lifecycle.submit, rejected, now=NOW)
    db.write(lifecycle.review, rejected, approve=False, reason="blurry photos", now=NOW)
    cancelled = create(db, shop, date(2027, 1, 28))
    approve(db, cancelled)
    db.write(lifecycle.cancel, cancelled)
    neighbour = db.write(open_shop, "Neighbour Tea", followers=3)
    approve(db, create(db, neighbour, date(2027, 1, 28)))

    now = at(2026, 12, 30, 12)
    days = db.call(calendar.calendar, shop.brand_id, date(2027, 1, 1), 30, now=now)
    assert [d.day for d in days] == [date(2027, 1, 1) + timedelta(days=i) for i in range(30)]
    for d in days:
        n = d.day.day
        expected_ids = []
        if 2 <= n <= 14:  # |d - 01-08| < 7
            expected_ids.append(a)
        if 14 <= n <= 26:  # |d - 01-20| < 7
            expected_ids.append(b)
        colour = "unavailable" if n <= 2 else ("conflict" if expected_ids else "free")
        assert d.colour == colour, d
        assert d.allowed is (n > 2), d
        assert [c.campaign_id for c in d.collisions] == expected_ids, d
        assert d.colliding_followers == (10 if expected_ids else 0), d
        for c in d.collisions:
            assert c.followers == 10
            assert c.start_on == {a: date(2027, 1, 8), b: date(2027, 1, 20)}[c.campaign_id]
        if n <= 2:
            assert len(d.reasons) == 1
            assert "the earliest start date is 2027-01-03" in d.reasons[0]
        else:
            assert d.reasons == []

    assert days[13].as_json() == {
        "date": "2027-01-14",
        "allowed": True,
        "colour": "conflict",
        "reasons": [],
        "colliding_followers": 10,
        "collisions": [
            {"campaign_id": a, "start_on": "2027-01-08", "followers": 10},
            {"campaign_id": b, "start_on": "2027-01-20", "followers": 10},
        ],
    }
    grey = days[1].as_json()
    assert grey["colour"] == "unavailable" and grey["allowed"] is False
    assert grey["collisions"] == [{"campaign_id": a, "start_on": "2027-01-08", "followers": 10}]
    assert days[29].as_json() == {
        "date": "2027-01-30",
        "allowed": True,
        "colour": "free",
        "reasons": [],
        "colliding_followers": 0,
        "collisions": [],
    }

    # A's own picker: A does not collide with itself, B still does
    own = db.call(calendar.calendar, shop.brand_id, date(2027, 1, 1), 30, now=now, campaign_id=a)
    for d in own:
        expected_ids = [b] if 14 <= d.day.day <= 26 else []
        assert [c.campaign_id for c in d.collisions] == expected_ids, d
    assert own[7].colour == "free"  # A's own start date

    # the picker covers 1 to 366 days
    assert len(db.call(calendar.calendar, shop.brand_id, date(2027, 1, 1), 366, now=now)) == 366
    for days_asked in (0, 367):
        with pytest.raises(CampaignError, match="between 1 and 366"):
            db.call(calendar.calendar, shop.brand_id, date(2027, 1, 1), days_asked, now=now)


# --- 5. moderation --------------------------------------------------------------


def test_rejection_is_final_and_recorded(db: Database) -> None:
    """A rejection needs a reason; with one, the campaign is ``not_approved`` for
    good: editing it says to create a new campaign, and it cannot be submitted
    or reviewed again.  The history lists every status with its reason."""
    shop = db.write(open_shop)
    campaign = create(db, shop, date(2026, 12, 20))
    db.write(lifecycle.submit, campaign, now=NOW)
    for reason in ("", "   "):
        message = refusal(db, lifecycle.review, campaign, approve=False, reason=reason, now=NOW)
        assert "a rejection needs a reason" in message
    assert status_of(db, campaign) is CampaignStatus.IN_REVIEW

    db.write(
        lifecycle.review,
        campaign,
        approve=False,
        reason="  the photos show another brand's logo ",
        now=NOW,
    )
    rejected = db.call(lifecycle.get_campaign, campaign)
    assert rejected.status is CampaignStatus.NOT_APPROVED
    assert rejected.status_reason == "the photos show another brand's logo"

    message = refusal(db, lifecycle.edit, campaign, Draft(subject="Better photos"), now=NOW)
    assert "not approved and cannot be edited: create a new campaign" in message
    assert "create a new campaign" in refusal(db, lifecycle.submit, campaign, now=NOW)
    assert "create a new campaign" in refusal(db, lifecycle.review, campaign, approve=True, now=NOW)
    assert db.call(lifecycle.get_campaign, campaign).subject == "Winter teas are here"

    history = db.call(lifecycle.history, campaign)
    assert [(h.status, h.reason) for h in history] == [
        (CampaignStatus.DRAFT, "created"),
        (CampaignStatus.IN_REVIEW, "submitted for review"),
        (CampaignStatus.NOT_APPROVED, "the photos show another brand's logo"),
    ]


def test_approval_before_the_start_date_only(db: Database) -> None:
    """Moderation cannot approve once 00:00 UTC of the start date has come; a
    second earlier it can.  Editing a campaign in review sends it back to draft,
    and the history shows it."""
    shop = db.write(open_shop)
    late = create(db, shop, date(2026, 12, 10))
    db.write(lifecycle.submit, late, now=NOW)
    message = refusal(db, lifecycle.review, late, approve=True, now=at(2026, 12, 10))
    assert "start date 2026-12-10 has passed: it cannot be approved" in message
    assert status_of(db, late) is CampaignStatus.IN_REVIEW
    db.write(lifecycle.review, late, approve=False, reason="too late to review", now=NOW)
    assert status_of(db, late) is CampaignStatus.NOT_APPROVED

    campaign = create(db, shop, date(2026, 12, 10))
    db.write(lifecycle.submit, campaign, now=NOW)
    db.write(lifecycle.edit, campaign, Draft(subject="Winter teas, new photos"), now=NOW)
    assert status_of(db, campaign) is CampaignStatus.DRAFT
    db.write(lifecycle.submit, campaign, now=NOW)
    db.write(
        lifecycle.review,
        campaign,
        approve=True,
        now=at(2026, 12, 10) - timedelta(seconds=1),
    )
    assert status_of(db, campaign) is CampaignStatus.APPROVED
    history = db.call(lifecycle.history, campaign)
    assert [(h.status, h.reason) for h in history] == [
        (CampaignStatus.DRAFT, "created"),
        (CampaignStatus.IN_REVIEW, "submitted for review"),
        (CampaignStatus.DRAFT, "edited during review: submit again"),
        (CampaignStatus.IN_REVIEW, "submitted for review"),
        (CampaignStatus.APPROVED, "approved"),
    ]
    message = refusal(db, lifecycle.edit, campaign, Draft(subject="x"), now=NOW)
    assert "is approved: only a draft or a campaign in review can be edited" in message


# --- 6. a promotion's end before or during its campaign ---------------------------


@pytest.mark.parametrize("ending", [PromotionStatus.CANCELLED, PromotionStatus.REJECTED])
async def test_promotion_ended_before_the_start_suspends_the_campaigns(
    db: Database, dispatcher: Dispatcher, ending: PromotionStatus
) -> None:
    """Cancelling or rejecting a promotion suspends its campaigns in review,
    approved or scheduled (a draft stays a draft, and cannot be submitted), and
    the dispatcher, at the start date and in the middle of the window, plans and
    sends nothing for them."""
    shop = db.write(open_shop)
    start = date(2026, 12, 10)
    promotion = add_promotion(db, shop.product_ids[0], at(2026, 12, 5), at(2026, 12, 31))
    other = add_promotion(db, shop.product_ids[0], at(2026, 12, 5), at(2026, 12, 31))

    def campaign(promotion_id: int = promotion) -> int:
        return create(db, shop, start, kind=CampaignKind.PROMOTION, promotion_id=promotion_id)

    scheduled = campaign()
    approve(db, scheduled)
    assert db.write(dispatch.take_up, NOW) == ([scheduled], [])
    approved = campaign()
    approve(db, approved)
    in_review = campaign()
    db.write(lifecycle.submit, in_review, now=NOW)
    a_draft = campaign()
    unrelated = campaign(other)
    db.write(lifecycle.submit, unrelated, now=NOW)

    changed, suspended = db.write(catalog.set_promotion_status, promotion, ending)
    assert changed.status is ending
    assert suspended == [scheduled, approved, in_review]
    for campaign_id in suspended:
        row = db.call(lifecycle.get_campaign, campaign_id)
        assert row.status is CampaignStatus.SUSPENDED
        assert row.status_reason == (
            f"its promotion {promotion} was {ending.value} before the campaign started"
        )
        assert db.call(lifecycle.history, campaign_id)[-1].status is CampaignStatus.SUSPENDED
    assert status_of(db, a_draft) is CampaignStatus.DRAFT
    assert status_of(db, unrelated) is CampaignStatus.IN_REVIEW
    assert f"promotion {promotion} is {ending.value}" in refusal(
        db, lifecycle.submit, a_draft, now=NOW
    )

    day_one = at(2026, 12, 10)
    assert db.write(dispatch.take_up, day_one) == ([], [])
    assert db.call(dispatch.due_to_start, day_one) == []
    for when in (day_one, at(2026, 12, 12, 12), at(2026, 12, 16)):
        done = await dispatcher.pass_once(when)
        assert done.started == [] and done.scheduled == [], done
        assert not done.outcomes, done
    assert db.call(count_sends) == 0
    assert db.call(count_messages) == 0
    for campaign_id in suspended:
        assert status_of(db, campaign_id) is CampaignStatus.SUSPENDED
        assert db.call(report.campaign_report, campaign_id)["planned"] == 0


@pytest.mark.parametrize("ending", [PromotionStatus.CANCELLED, PromotionStatus.REJECTED])
def test_promotion_of_a_sending_campaign_cannot_end(db: Database, ending: PromotionStatus) -> None:
    """While a campaign that shows the promotion is sending, cancelling or
    rejecting the promotion is refused: it stays approved, the campaign keeps
    sending its planned messages, and another campaign showing it is not
    suspended.  Its messages are planned inside the window cut to the
    promotion's end."""
    shop = db.write(open_shop)
    start = date(2026, 12, 10)
    promotion_end = at(2026, 12, 12, 18)
    promotion = add_promotion(db, shop.product_ids[0], at(2026, 12, 5), promotion_end)
    sending = create(db, shop, start, kind=CampaignKind.PROMOTION, promotion_id=promotion)
    approve(db, sending)
    day_one = at(2026, 12, 10)
    assert db.write(dispatch.take_up, day_one) == ([sending], [])
    assert db.write(dispatch.start, sending, day_one) == ("started", 10)
    assert status_of(db, sending) is CampaignStatus.SENDING
    waiting = create(
        db, shop, date(2026, 12, 11), kind=CampaignKind.PROMOTION, promotion_id=promotion
    )
    approve(db, waiting)

    message = refusal(db, catalog.set_promotion_status, promotion, ending)
    assert f"shown by campaign {sending}, which is being sent" in message
    assert db.call(catalog.get_promotion, promotion).status is PromotionStatus.APPROVED
    assert status_of(db, sending) is CampaignStatus.SENDING
    assert status_of(db, waiting) is CampaignStatus.APPROVED

    planned = db.call(sends, sending)
    assert len(planned) == 10
    assert all(s.status is SendStatus.PLANNED for s in planned)
    for s in planned:
        assert day_one <= clock.as_utc(s.due_at) < promotion_end, s


# --- 7. who may send, what they may show ------------------------------------------


def test_only_registered_brands_with_store_page_and_followers(db: Database) -> None:
    """Campaigns are for brands in the registry, with a store page and at least
    one (still subscribed) follower; each refusal says which is missing, and
    ``submit`` checks again."""
    cases = [
        (dict(name="Unregistered", registered=False), "is not registered in the brand registry"),
        (dict(name="No Page", store_page=False), "has no store page"),
        (dict(name="No Fans", followers=0), "has no followers"),
    ]
    for options, reason in cases:
        shop = db.write(open_shop, **options)
        message = refusal(
            db, lifecycle.create, shop.brand_id, draft(shop, date(2026, 12, 10)), now=NOW
        )
        assert f"brand {options['name']!r} {reason}" in message
        assert "campaigns are for registered brands with a store page and followers" in message

    gone = db.write(open_shop, "Gone Fans", followers=1)
    db.write(catalog.unfollow, gone.brand_id, "fan0@gone-fans.example")
    message = refusal(db, lifecycle.create, gone.brand_id, draft(gone, date(2026, 12, 10)), now=NOW)
    assert "brand 'Gone Fans' has no followers" in message

    shop = db.write(open_shop)
    campaign = create(db, shop, date(2026, 12, 10))
    db.write(catalog.update_brand, shop.brand_id, registered=False, store_page=None)
    message = refusal(db, lifecycle.submit, campaign, now=NOW)
    assert "is not registered in the brand registry" in message
    assert status_of(db, campaign) is CampaignStatus.DRAFT


def test_featured_products(db: Database) -> None:
    """The main product plus up to four more, each once, all the brand's own."""
    shop = db.write(open_shop)
    stranger = db.write(open_shop, "Stranger Coffee", followers=1, products=1)
    main, *extras = shop.product_ids  # five extra products available
    start = date(2026, 12, 10)

    campaign = create(db, shop, start, extra_product_ids=extras[:4])
    shown = db.call(lifecycle.extra_products, campaign)
    assert [p.id for p in shown] == extras[:4]

    refused = [
        (extras[:5], "at most 4 more"),
        ([extras[0], extras[1], extras[0]], "each product may be featured once"),
        ([main, extras[0]], "each product may be featured once"),
        (
            [extras[0], stranger.product_ids[0]],
            f"product {stranger.product_ids[0]} is not one of the brand's products",
        ),
    ]
    for ids, reason in refused:
        message = refusal(
            db,
            lifecycle.create,
            shop.brand_id,
            draft(shop, start, extra_product_ids=ids),
            now=NOW,
        )
        assert reason in message, (ids, message)
    message = refusal(
        db,
        lifecycle.create,
        shop.brand_id,
        draft(shop, start, main_product_id=stranger.product_ids[0]),
        now=NOW,
    )
    assert f"product {stranger.product_ids[0]} is not one of the brand's products" in message

    # the same limits hold when editing
    message = refusal(db, lifecycle.edit, campaign, Draft(extra_product_ids=extras[:5]), now=NOW)
    assert "at most 4 more" in message
    assert [p.id for p in db.call(lifecycle.extra_products, campaign)] == extras[:4]


def test_no_email_addresses_in_texts(db: Database) -> None:
    """A campaign's subject and content, and a product's title, may not carry an
    email address (created or edited)."""
    shop = db.write(open_shop)
    start = date(2026, 12, 10)
    address = "orders@lotus-tea.example"
    for field_name, what in (("subject", "subject"), ("content", "content")):
        message = refusal(
            db,
            lifecycle.create,
            shop.brand_id,
            draft(shop, start, **{field_name: f"Questions? Write to {address} today"}),
            now=NOW,
        )
        assert f"the {what} contains an email address" in message
    campaign = create(db, shop, start)
    message = refusal(
        db, lifecycle.edit, campaign, Draft(content=f"Mail <{address}> for samples"), now=NOW
    )
    assert "the content contains an email address" in message
    assert "@" not in db.call(lifecycle.get_campaign, campaign).content

    message = refusal(
        db,
        catalog.add_product,
        shop.brand_id,
        sku="lotus-mail",
        title=f"Sampler ({address})",
        price="5 USD",
        description="",
    )
    assert "the product title contains an email address" in message
    # a social handle is not an address
    assert create(db, shop, start, subject="Follow @lotustea for the winter blends")
    # the full-width at sign reads as one
    message = refusal(
        db,
        lifecycle.create,
        shop.brand_id,
        draft(shop, start, subject="Write to orders\uff20lotus-tea.example"),
        now=NOW,
    )
    assert "the subject contains an email address" in message


def test_calendar_greys_every_day_for_a_promotion_that_cannot_be_chosen(db: Database) -> None:
    """A date picker for a pending, cancelled or another product's promotion offers
    no date: ``create`` would refuse each one."""
    shop = db.write(open_shop)
    period = (at(2026, 12, 1), at(2026, 12, 31))
    eligible = add_promotion(db, shop.product_ids[0], *period)
    pending = add_promotion(db, shop.product_ids[0], *period, status=PromotionStatus.PENDING)
    cancelled = add_promotion(db, shop.product_ids[0], *period, status=PromotionStatus.CANCELLED)
    first, days = date(2026, 12, 10), 5

    def colours(promotion_id: int, campaign_id: int | None = None) -> list[tuple[str, list[str]]]:
        found = db.call(
            calendar.calendar,
            shop.brand_id,
            first,
            days,
            now=NOW,
            promotion_id=promotion_id,
            campaign_id=campaign_id,
        )
        return [(d.colour, d.reasons) for d in found]

    assert colours(eligible) == [("free", [])] * days
    for promotion_id, why in ((pending, "pending"), (cancelled, "cancelled")):
        for colour, reasons in colours(promotion_id):
            assert colour == "unavailable"
            assert any(why in r for r in reasons), reasons
    # the same promotion, for a campaign on another product
    other = create(db, shop, date(2026, 12, 20), main_product_id=shop.product_ids[1])
    for colour, reasons in colours(eligible, other):
        assert colour == "unavailable"
        assert any("another product" in r for r in reasons), reasons


# --- the 7-day rule's ledger ------------------------------------------------------


def test_seven_day_ledger_first_contact_and_frequency(db: Database) -> None:
    """The 7-day rule's ledger: the first contact of a brand with a customer is
    granted (this failed on PostgreSQL, where the INSERT's rowcount reads -1, so
    every first message was "skipped" for its own campaign); another campaign
    less than 7 days later is refused and told which campaign holds the
    customer; exactly 7 days later it is granted."""
    shop = db.write(open_shop, followers=2)
    first = create(db, shop, date(2026, 12, 10))
    second = create(db, shop, date(2026, 12, 15))
    buyer = shop.buyer_ids[0]

    def reserve(campaign_id: int, when: datetime) -> int | None:
        return db.write(
            ledger.reserve,
            brand_id=shop.brand_id,
            buyer_id=buyer,
            campaign_id=campaign_id,
            at=when,
        )

    sent_at = at(2026, 12, 10, 9)
    assert reserve(first, sent_at) is None
    assert reserve(second, sent_at + timedelta(days=7) - timedelta(seconds=1)) == first
    contact = db.call(lambda s: s.get(BrandContact, (shop.brand_id, buyer)))
    held = ledger.held_by(contact, sent_at)
    assert held == first
    assert reserve(second, sent_at + timedelta(days=7)) is None
    assert reserve(first, sent_at + timedelta(days=8)) == second
    # another customer of the same brand is not held by either
    assert (
        db.write(
            ledger.reserve,
            brand_id=shop.brand_id,
            buyer_id=shop.buyer_ids[1],
            campaign_id=second,
            at=sent_at + timedelta(days=7),
        )
        is None
    )


# --- 8. cancelling a sending campaign ----------------------------------------------


async def test_cancel_while_sending_withdraws_the_rest(
    db: Database, dispatcher: Dispatcher
) -> None:
    """A campaign cancelled half-way: the messages already queued stay sent, every
    planned one is withdrawn at once, later passes send nothing more for it, and
    the report counts both."""
    shop = db.write(open_shop)
    campaign = create(db, shop, date(2026, 12, 10))
    approve(db, campaign)
    first = await dispatcher.pass_once(at(2026, 12, 10))
    assert first.started == [campaign]
    planned = db.call(sends, campaign)
    assert len(planned) == 10
    halfway = clock.as_utc(planned[4].due_at)
    middle = await dispatcher.pass_once(halfway)
    assert middle.outcomes == {"sent": 5}
    assert db.call(count_messages) == 5
    before = db.call(report.campaign_report, campaign)
    assert (before["sent"], before["pending"], before["withdrawn"]) == (5, 5, 0)

    cancelled, withdrawn = db.write(lifecycle.cancel, campaign)
    assert cancelled.status is CampaignStatus.CANCELLED
    assert withdrawn == 5
    after = db.call(sends, campaign)
    assert sorted(s.status.value for s in after) == ["sent"] * 5 + ["withdrawn"] * 5
    assert all(s.done_at is not None for s in after)

    late = await dispatcher.pass_once(at(2026, 12, 16))
    assert not late.outcomes and late.completed == []
    assert db.call(count_messages) == 5
    assert status_of(db, campaign) is CampaignStatus.CANCELLED
    counts = db.call(report.campaign_report, campaign)
    assert counts["planned"] == 10
    assert counts["sent"] == 5
    assert counts["withdrawn"] == 5
    assert counts["pending"] == 0
    assert "withdrawn 5" in report.describe_report(counts)
    assert "already" in refusal(db, lifecycle.cancel, campaign)
