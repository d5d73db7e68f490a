"""A campaign from draft to review: create, edit, submit, review, cancel.

draft ─submit→ in_review ─review→ approved ─(dispatcher)→ scheduled → sending → completed
                          └──────→ not_approved (final: the brand creates a new one)
Before it starts, a campaign whose promotion is rejected or cancelled becomes
``suspended`` (``catalog.set_promotion_status``, and the dispatcher checks
again); the brand may ``cancel`` it until it has completed.

Every check of dates and promotions is ``relay.campaigns.rules``'; this module
applies them when a campaign is created, edited, submitted and approved.
Brands write their own subject and text, so these refuse an email address in
them: the marketplace's campaigns, like its messages, carry no addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlmodel import Session, col, delete, select

from relay.campaigns import catalog, rules
from relay.campaigns.catalog import CampaignError
from relay.campaigns.models import (
    FINAL_STATUSES,
    Campaign,
    CampaignKind,
    CampaignProduct,
    CampaignStatus,
    CampaignStatusChange,
    Product,
    Promotion,
    ShoppingEvent,
)
from relay.campaigns.status import set_status
from relay.core import names
from relay.core.clock import as_utc
from relay.storage.models import utcnow

MAX_SUBJECT = 200
MAX_CONTENT = 20_000


@dataclass(slots=True)
class Draft:
    """What the brand chooses; ``None`` in an edit means "unchanged"."""

    kind: CampaignKind | None = None
    main_product_id: int | None = None
    extra_product_ids: list[int] | None = None
    promotion_id: int | None = None
    event_id: int | None = None
    subject: str | None = None
    content: str | None = None
    start_on: date | None = None
    clear: set[str] = field(default_factory=set)
    """``promotion`` and/or ``event``: remove it (edit only)."""


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError(f"no campaign with id {campaign_id}")
    return campaign


def extra_products(session: Session, campaign_id: int) -> list[Product]:
    rows = session.exec(
        select(Product)
        .join(CampaignProduct, col(CampaignProduct.product_id) == col(Product.id))
        .where(CampaignProduct.campaign_id == campaign_id)
        .order_by(col(CampaignProduct.position))
    ).all()
    return list(rows)


def create(
    session: Session, brand_id: int, draft: Draft, *, now: datetime | None = None
) -> Campaign:
    """A new draft; refused unless every rule holds already (the review lead too)."""
    now = now or utcnow()
    brand = catalog.get_brand(session, brand_id)
    if draft.kind is None or draft.main_product_id is None or draft.start_on is None:
        raise CampaignError("a campaign needs a kind, a main product and a start date")
    problems = catalog.brand_problems(session, brand)
    if problems:
        raise CampaignError(
            "; ".join(problems) + ": campaigns are for registered brands with a"
            " store page and followers"
        )
    campaign = Campaign(
        brand_id=brand_id,
        kind=draft.kind,
        main_product_id=draft.main_product_id,
        promotion_id=draft.promotion_id,
        event_id=draft.event_id,
        subject=(draft.subject or "").strip(),
        content=(draft.content or "").strip(),
        start_on=draft.start_on,
    )
    _check(session, campaign, draft.extra_product_ids or [], now=now)
    session.add(campaign)
    session.flush()
    _set_extra_products(session, campaign, draft.extra_product_ids or [])
    set_status(session, campaign, CampaignStatus.DRAFT, "created")
    session.flush()
    return campaign


def edit(
    session: Session, campaign_id: int, draft: Draft, *, now: datetime | None = None
) -> Campaign:
    """Change a draft, or a campaign in review (which goes back to draft: it
    must be submitted, and reviewed, again)."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id)
    if campaign.status is CampaignStatus.NOT_APPROVED:
        raise CampaignError(
            f"campaign {campaign_id} was not approved and cannot be edited: create a new"
            " campaign that meets the content requirements"
        )
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.IN_REVIEW):
        raise CampaignError(
            f"campaign {campaign_id} is {campaign.status.value}: only a draft or a campaign"
            " in review can be edited"
        )
    for name in ("kind", "main_product_id", "promotion_id", "event_id", "start_on"):
        value = getattr(draft, name)
        if value is not None:
            setattr(campaign, name, value)
    if draft.subject is not None:
        campaign.subject = draft.subject.strip()
    if draft.content is not None:
        campaign.content = draft.content.strip()
    if "promotion" in draft.clear:
        campaign.promotion_id = None
    if "event" in draft.clear:
        campaign.event_id = None
    assert campaign.id is not None
    extras = (
        draft.extra_product_ids
        if draft.extra_product_ids is not None
        else [p.id for p in extra_products(session, campaign.id) if p.id is not None]
    )
    _check(session, campaign, extras, now=now)
    _set_extra_products(session, campaign, extras)
    campaign.updated_at = utcnow()
    session.add(campaign)
    if campaign.status is CampaignStatus.IN_REVIEW:
        set_status(session, campaign, CampaignStatus.DRAFT, "edited during review: submit again")
    session.flush()
    return campaign


def submit(session: Session, campaign_id: int, *, now: datetime | None = None) -> Campaign:
    """Send a draft to moderation: every rule is checked again, the 72-hour lead
    against the time of submission."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id)
    _expect(campaign, CampaignStatus.DRAFT, "submitted")
    brand = catalog.get_brand(session, campaign.brand_id)
    problems = catalog.brand_problems(session, brand)
    if problems:
        raise CampaignError("; ".join(problems))
    assert campaign.id is not None
    extras = [p.id for p in extra_products(session, campaign.id) if p.id is not None]
    _check(session, campaign, extras, now=now)
    set_status(session, campaign, CampaignStatus.IN_REVIEW, "submitted for review")
    session.flush()
    return campaign


def review(
    session: Session,
    campaign_id: int,
    *,
    approve: bool,
    reason: str = "",
    now: datetime | None = None,
) -> Campaign:
    """Moderation's decision.  Approval needs the promotion still eligible and
    the delivery window not begun; a rejection needs a reason and is final."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id)
    _expect(campaign, CampaignStatus.IN_REVIEW, "reviewed")
    if not approve:
        if not reason.strip():
            raise CampaignError("a rejection needs a reason (--reason): the brand is told it")
        set_status(session, campaign, CampaignStatus.NOT_APPROVED, reason.strip())
        session.flush()
        return campaign
    if rules.day_start(campaign.start_on) <= now:
        raise CampaignError(
            f"campaign {campaign_id}'s start date {campaign.start_on} has passed: it cannot be"
            " approved; reject it, and the brand creates a new one"
        )
    promotion = _promotion(session, campaign)
    if promotion is not None:
        problems = rules.promotion_problems(
            promotion, main_product_id=campaign.main_product_id, start_on=campaign.start_on, now=now
        )
        if problems:
            raise CampaignError("; ".join(problems))
    set_status(session, campaign, CampaignStatus.APPROVED, reason.strip() or "approved")
    session.flush()
    return campaign


def cancel(session: Session, campaign_id: int) -> tuple[Campaign, int]:
    """The brand withdraws its campaign; returns it and how many planned
    messages will not be sent."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status in FINAL_STATUSES:
        raise CampaignError(f"campaign {campaign_id} is {campaign.status.value} already")
    withdrawn = set_status(session, campaign, CampaignStatus.CANCELLED, "cancelled by the brand")
    session.flush()
    return campaign, withdrawn


def history(session: Session, campaign_id: int) -> list[CampaignStatusChange]:
    return list(
        session.exec(
            select(CampaignStatusChange)
            .where(CampaignStatusChange.campaign_id == campaign_id)
            .order_by(col(CampaignStatusChange.id))
        ).all()
    )


def list_campaigns(
    session: Session, *, brand_id: int | None = None, status: CampaignStatus | None = None
) -> list[Campaign]:
    query = select(Campaign).order_by(col(Campaign.start_on), col(Campaign.id))
    if brand_id is not None:
        query = query.where(Campaign.brand_id == brand_id)
    if status is not None:
        query = query.where(Campaign.status == status)
    return list(session.exec(query).all())


def _expect(campaign: Campaign, status: CampaignStatus, doing: str) -> None:
    if campaign.status is not status:
        extra = ": create a new campaign" if campaign.status is CampaignStatus.NOT_APPROVED else ""
        raise CampaignError(
            f"campaign {campaign.id} is {campaign.status.value}, not {status.value}: it cannot"
            f" be {doing}{extra}"
        )


def _promotion(session: Session, campaign: Campaign) -> Promotion | None:
    if campaign.promotion_id is None:
        return None
    return catalog.get_promotion(session, campaign.promotion_id)


def _event(session: Session, campaign: Campaign) -> ShoppingEvent | None:
    if campaign.event_id is None:
        return None
    return catalog.get_event(session, campaign.event_id)


def _check(session: Session, campaign: Campaign, extras: list[int], *, now: datetime) -> None:
    """Every rule a draft must meet; raises CampaignError listing all that fail."""
    problems: list[str] = []
    main = catalog.get_product(session, campaign.main_product_id)
    if main.brand_id != campaign.brand_id:
        problems.append(f"product {main.id} is not one of the brand's products")
    if len(extras) > rules.MAX_EXTRA_PRODUCTS:
        problems.append(
            f"a campaign shows its main product and at most {rules.MAX_EXTRA_PRODUCTS} more"
        )
    if len(set(extras)) != len(extras) or campaign.main_product_id in extras:
        problems.append("each product may be featured once")
    for product_id in extras:
        if catalog.get_product(session, product_id).brand_id != campaign.brand_id:
            problems.append(f"product {product_id} is not one of the brand's products")
    promotion = _promotion(session, campaign)
    if campaign.kind is CampaignKind.PROMOTION and promotion is None:
        problems.append("a promotion campaign needs a promotion (--promotion)")
    if promotion is not None:
        problems += rules.promotion_problems(
            promotion, main_product_id=campaign.main_product_id, start_on=campaign.start_on, now=now
        )
    problems += [
        f"start date {campaign.start_on}: {problem}"
        for problem in rules.date_problems(
            campaign.start_on, now=now, event=_event(session, campaign), promotion=promotion
        )
    ]
    if not campaign.subject:
        problems.append("a campaign needs a subject")
    if not campaign.content:
        problems.append("a campaign needs content")
    subject_problem = names.problem(campaign.subject, max_length=MAX_SUBJECT, address_ok=True)
    if campaign.subject and subject_problem is not None:
        problems.append(f"the subject {subject_problem}")
    if len(campaign.content) > MAX_CONTENT:
        problems.append(f"the content must be at most {MAX_CONTENT} characters")
    for what, text in (("subject", campaign.subject), ("content", campaign.content)):
        if names.has_address(text):
            problems.append(
                f"the {what} contains an email address: campaigns carry no addresses (customers"
                " reach the brand through its store page)"
            )
    if problems:
        raise CampaignError("; ".join(dict.fromkeys(problems)))


def _set_extra_products(session: Session, campaign: Campaign, extras: list[int]) -> None:
    assert campaign.id is not None
    session.exec(delete(CampaignProduct).where(col(CampaignProduct.campaign_id) == campaign.id))
    for position, product_id in enumerate(extras, start=1):
        session.add(
            CampaignProduct(campaign_id=campaign.id, position=position, product_id=product_id)
        )


def describe(session: Session, campaign: Campaign, *, with_history: bool = True) -> dict[str, Any]:
    """The campaign as ``relay campaign show --json`` prints it (without the
    report), with its status changes unless ``with_history`` is false."""
    assert campaign.id is not None
    promotion = _promotion(session, campaign)
    window = rules.delivery_window(campaign.start_on, promotion)
    described: dict[str, Any] = {
        "campaign_id": campaign.id,
        "brand_id": campaign.brand_id,
        "kind": campaign.kind.value,
        "status": campaign.status.value,
        "status_reason": campaign.status_reason,
        "subject": campaign.subject,
        "content": campaign.content,
        "main_product_id": campaign.main_product_id,
        "extra_product_ids": [p.id for p in extra_products(session, campaign.id)],
        "promotion_id": campaign.promotion_id,
        "event_id": campaign.event_id,
        "start_on": campaign.start_on.isoformat(),
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
    }
    if with_history:
        described["history"] = [
            {"status": h.status.value, "at": _iso(h.at), "reason": h.reason}
            for h in history(session, campaign.id)
        ]
    return described


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat()
