"""Brands, followers, products, promotions and shopping events.

The administrative side of campaigns: what ``relay brand|follower|product|
promotion|event`` change.  Promotion status changes reach the campaigns that
show the promotion: a promotion rejected or cancelled before its campaign
starts suspends that campaign; one whose campaign is sending cannot be
cancelled or rejected at all (the marketplace's rule: "the promotion must not
be cancelled while the campaign is being sent"), so a message never promises a
discount that no longer exists.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from sqlmodel import Session, col, func, select

from relay.campaigns import rules
from relay.campaigns.models import (
    Brand,
    Campaign,
    CampaignStatus,
    Follower,
    Product,
    Promotion,
    PromotionKind,
    PromotionStatus,
    ShoppingEvent,
)
from relay.campaigns.status import set_status
from relay.core import names
from relay.core.clock import as_utc
from relay.storage import directory
from relay.storage.directory import DirectoryError
from relay.storage.events import EventType, emit
from relay.storage.models import Buyer, utcnow

M = TypeVar("M")


class CampaignError(DirectoryError):
    """A campaign request that the marketplace's rules refuse, or an unknown id."""


def no_address(what: str, text: str) -> None:
    """Brands' texts carry no email address: a campaign must never become a way to
    pass one on (and the only address in a campaign message is its ``To``)."""
    if names.has_address(text):
        raise CampaignError(f"the {what} contains an email address, which campaigns may not carry")


def checked_name(field: str, text: str) -> str:
    """A name shown in a header or a heading (``relay.core.names``), or CampaignError."""
    try:
        checked = names.check(field, text, address_ok=True)
    except names.NameProblem as exc:
        raise CampaignError(str(exc)) from None
    no_address(field, checked)
    return checked


def _get(session: Session, model: type[M], key: int, what: str) -> M:
    row = session.get(model, key)
    if row is None:
        raise CampaignError(f"no {what} with id {key}")
    return row


def get_brand(session: Session, brand_id: int) -> Brand:
    return _get(session, Brand, brand_id, "brand")


def get_product(session: Session, product_id: int) -> Product:
    return _get(session, Product, product_id, "product")


def get_promotion(session: Session, promotion_id: int) -> Promotion:
    return _get(session, Promotion, promotion_id, "promotion")


def get_event(session: Session, event_id: int) -> ShoppingEvent:
    return _get(session, ShoppingEvent, event_id, "shopping event")


# --- brands -----------------------------------------------------------------


def add_brand(session: Session, *, name: str, registered: bool, store_page: bool) -> Brand:
    name = name.strip()
    if not name:
        raise CampaignError("a brand needs a name")
    name = checked_name("brand name", name)
    if session.exec(select(Brand.id).where(Brand.name == name)).first() is not None:
        raise CampaignError(f"a brand named {name!r} exists already")
    brand = Brand(name=name, registered=registered, store_page=store_page)
    session.add(brand)
    session.flush()
    return brand


def update_brand(
    session: Session, brand_id: int, *, registered: bool | None, store_page: bool | None
) -> Brand:
    brand = get_brand(session, brand_id)
    if registered is not None:
        brand.registered = registered
    if store_page is not None:
        brand.store_page = store_page
    session.add(brand)
    session.flush()
    return brand


def active_followers(session: Session, brand_id: int) -> int:
    return int(
        session.exec(
            select(func.count()).where(
                Follower.brand_id == brand_id, col(Follower.unsubscribed_at).is_(None)
            )
        ).one()
    )


def brand_problems(session: Session, brand: Brand) -> list[str]:
    """Why ``brand`` may not send campaigns (empty: it may)."""
    problems = []
    if not brand.registered:
        problems.append(f"brand {brand.name!r} is not registered in the brand registry")
    if not brand.store_page:
        problems.append(f"brand {brand.name!r} has no store page")
    assert brand.id is not None
    if active_followers(session, brand.id) == 0:
        problems.append(f"brand {brand.name!r} has no followers")
    return problems


# --- followers --------------------------------------------------------------


def follow(
    session: Session, brand_id: int, email: str, *, name: str = "", since: datetime | None = None
) -> Follower:
    """``email`` follows the brand (again, if it had unsubscribed)."""
    get_brand(session, brand_id)
    buyer = directory.find_buyer(session, email)
    if buyer is None:
        buyer = Buyer(email=directory.normalize_email(email), name=directory.optional_name(name))
        session.add(buyer)
        session.flush()
    elif name.strip() and not buyer.name:
        buyer.name = directory.optional_name(name)
        session.add(buyer)
    assert buyer.id is not None
    follower = session.exec(
        select(Follower).where(Follower.brand_id == brand_id, Follower.buyer_id == buyer.id)
    ).first()
    when = as_utc(since) if since is not None else utcnow()
    if follower is None:
        follower = Follower(brand_id=brand_id, buyer_id=buyer.id, followed_since=when)
    elif follower.unsubscribed_at is not None:
        follower.unsubscribed_at = None
        follower.unsubscribed_campaign_id = None
        follower.followed_since = when
    session.add(follower)
    session.flush()
    return follower


class Via(enum.StrEnum):
    """How a follower left a brand (``follower.unsubscribed``'s ``via``)."""

    LINK = "link"
    """The unsubscribe link or header of a campaign message."""
    ADMIN = "admin"
    """The marketplace asked (``relay follower remove``, the API)."""


def unsubscribed(session: Session, follower: Follower, via: Via) -> None:
    """The webhook event of a follower who just left, in this transaction."""
    emit(
        session,
        EventType.FOLLOWER_UNSUBSCRIBED,
        {
            "follower_id": follower.id,
            "campaign_id": follower.unsubscribed_campaign_id,
            "via": via.value,
        },
        brand_id=follower.brand_id,
    )


def unfollow(session: Session, brand_id: int, email: str) -> Follower:
    """The follower unsubscribes from the brand's campaigns (an admin's request)."""
    buyer = directory.find_buyer(session, email)
    follower = (
        session.exec(
            select(Follower).where(Follower.brand_id == brand_id, Follower.buyer_id == buyer.id)
        ).first()
        if buyer is not None
        else None
    )
    if follower is None:
        raise CampaignError(f"{email} does not follow brand {brand_id}")
    if follower.unsubscribed_at is None:
        follower.unsubscribed_at = utcnow()
        session.add(follower)
        session.flush()
        unsubscribed(session, follower, Via.ADMIN)
    return follower


def followers(session: Session, brand_id: int) -> list[tuple[Follower, Buyer]]:
    get_brand(session, brand_id)
    rows = session.exec(
        select(Follower, Buyer)
        .join(Buyer, col(Buyer.id) == col(Follower.buyer_id))
        .where(Follower.brand_id == brand_id)
        .order_by(col(Follower.id))
    ).all()
    return [(f, b) for f, b in rows]


# --- products ---------------------------------------------------------------


def add_product(
    session: Session, brand_id: int, *, sku: str, title: str, price: str, description: str
) -> Product:
    get_brand(session, brand_id)
    sku, title = sku.strip(), title.strip()
    if not sku or not title:
        raise CampaignError("a product needs a SKU and a title")
    for what, text in (("SKU", sku), ("price", price), ("description", description)):
        no_address(f"product {what}", text)
    title = checked_name("product title", title)
    if session.exec(select(Product.id).where(Product.sku == sku)).first() is not None:
        raise CampaignError(f"a product with SKU {sku!r} exists already")
    product = Product(
        brand_id=brand_id,
        sku=sku,
        title=title,
        price=price.strip(),
        description=description.strip(),
    )
    session.add(product)
    session.flush()
    return product


def products(session: Session, brand_id: int) -> list[Product]:
    get_brand(session, brand_id)
    return list(
        session.exec(
            select(Product).where(Product.brand_id == brand_id).order_by(col(Product.id))
        ).all()
    )


# --- promotions -------------------------------------------------------------


def add_promotion(
    session: Session,
    product_id: int,
    *,
    kind: PromotionKind,
    discount: str,
    starts_at: datetime,
    ends_at: datetime,
    approved: bool = False,
) -> Promotion:
    get_product(session, product_id)
    try:
        amount = Decimal(discount.strip())
    except InvalidOperation:
        raise CampaignError(f"discount {discount!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise CampaignError("the discount must be a positive number")
    if kind is PromotionKind.PERCENT_OFF and amount >= 100:
        raise CampaignError("a percent_off discount must be below 100")
    starts_at, ends_at = as_utc(starts_at), as_utc(ends_at)
    if ends_at <= starts_at:
        raise CampaignError("a promotion must end after it starts")
    promotion = Promotion(
        product_id=product_id,
        kind=kind,
        discount=format(amount.normalize(), "f"),
        starts_at=starts_at,
        ends_at=ends_at,
        status=PromotionStatus.APPROVED if approved else PromotionStatus.PENDING,
    )
    session.add(promotion)
    session.flush()
    return promotion


_ALLOWED = {
    PromotionStatus.APPROVED: {PromotionStatus.PENDING},
    PromotionStatus.REJECTED: {PromotionStatus.PENDING, PromotionStatus.APPROVED},
    PromotionStatus.CANCELLED: {PromotionStatus.PENDING, PromotionStatus.APPROVED},
}

_BEFORE_START = (CampaignStatus.IN_REVIEW, CampaignStatus.APPROVED, CampaignStatus.SCHEDULED)


def set_promotion_status(
    session: Session, promotion_id: int, status: PromotionStatus
) -> tuple[Promotion, list[int]]:
    """Approve, reject or cancel a promotion; returns it and the ids of the
    campaigns this suspended.

    Refused while a campaign showing the promotion is sending.  The promotion
    row is locked first (``FOR UPDATE`` on PostgreSQL; SQLite's writer holds the
    whole database), the same lock the dispatcher takes before it starts such a
    campaign, so a campaign cannot start sending between this check and the
    change."""
    promotion = session.exec(
        select(Promotion).where(Promotion.id == promotion_id).with_for_update()
    ).first()
    if promotion is None:
        raise CampaignError(f"no promotion with id {promotion_id}")
    if promotion.status is status:
        return promotion, []
    if promotion.status not in _ALLOWED[status]:
        raise CampaignError(
            f"promotion {promotion_id} is {promotion.status.value}: it cannot become {status.value}"
        )
    campaigns = session.exec(
        select(Campaign).where(Campaign.promotion_id == promotion_id).order_by(col(Campaign.id))
    ).all()
    sending = [c.id for c in campaigns if c.status is CampaignStatus.SENDING]
    if status is not PromotionStatus.APPROVED and sending:
        raise CampaignError(
            f"promotion {promotion_id} is shown by campaign"
            f" {', '.join(map(str, sending))}, which is being sent: a promotion cannot be"
            " cancelled or rejected while its campaign is sending; try again when it has"
            " completed"
        )
    promotion.status = status
    promotion.updated_at = utcnow()
    session.add(promotion)
    suspended: list[int] = []
    if status is not PromotionStatus.APPROVED:
        for campaign in campaigns:
            if campaign.status in _BEFORE_START:
                set_status(
                    session,
                    campaign,
                    CampaignStatus.SUSPENDED,
                    f"its promotion {promotion_id} was {status.value} before the campaign started",
                )
                assert campaign.id is not None
                suspended.append(campaign.id)
    session.flush()
    return promotion, suspended


def eligible_promotions(
    session: Session, product_id: int, start_on: date, now: datetime
) -> list[Promotion]:
    """The promotions a campaign on ``product_id`` starting ``start_on`` may show."""
    get_product(session, product_id)
    candidates = session.exec(
        select(Promotion).where(Promotion.product_id == product_id).order_by(col(Promotion.id))
    ).all()
    return [
        p
        for p in candidates
        if not rules.promotion_problems(p, main_product_id=product_id, start_on=start_on, now=now)
        and rules.promotion_period_problem(start_on, p) is None
    ]


def promotions(session: Session, product_id: int | None = None) -> list[Promotion]:
    query = select(Promotion).order_by(col(Promotion.id))
    if product_id is not None:
        query = query.where(Promotion.product_id == product_id)
    return list(session.exec(query).all())


# --- shopping events --------------------------------------------------------


def add_event(session: Session, *, name: str, starts_on: date, ends_on: date) -> ShoppingEvent:
    name = name.strip()
    if not name:
        raise CampaignError("a shopping event needs a name")
    name = checked_name("event name", name)
    if ends_on < starts_on:
        raise CampaignError("a shopping event must end on or after its first day")
    if session.exec(select(ShoppingEvent.id).where(ShoppingEvent.name == name)).first():
        raise CampaignError(f"a shopping event named {name!r} exists already")
    event = ShoppingEvent(name=name, starts_on=starts_on, ends_on=ends_on)
    session.add(event)
    session.flush()
    return event


def events(session: Session) -> list[ShoppingEvent]:
    return list(session.exec(select(ShoppingEvent).order_by(col(ShoppingEvent.starts_on))).all())
