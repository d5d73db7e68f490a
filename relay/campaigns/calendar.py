"""The date picker's information: for each candidate start date, may it be
chosen, and does it collide with the brand's other campaigns under the 7-day
rule (and for how many followers).

Colours, as the picker shows them:

- ``unavailable`` (grey): the date cannot be chosen: it leaves moderation less
  than 72 hours, or lies outside the campaign's shopping event or promotion, or
  the promotion cannot be chosen at all (another product's, not approved,
  ended);
- ``conflict`` (red): it can be chosen, but another campaign of the brand
  starts less than 7 days before or after it: the followers both would reach
  get only one of them;
- ``free`` (green): it can be chosen and collides with nothing.

Another campaign counts while it may still reach someone or has reached them:
in review, approved, scheduled, sending or completed (drafts, rejected,
suspended and cancelled campaigns reach nobody).  The followers it shares with
the candidate are today's active followers of the brand, less, for a campaign
that has started, those it skipped or withdrew (they were not reached by it).
Because each follower has the same place in every window (``rules.slot``),
"starts less than 7 days apart" is exactly "a shared follower would be reached
twice within 7 days" for windows of the full 5 days; a window cut short by its
promotion's end makes the forecast conservative.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from relay.campaigns import catalog, rules
from relay.campaigns.models import (
    Campaign,
    CampaignSend,
    CampaignStatus,
    Follower,
    Promotion,
    SendStatus,
    ShoppingEvent,
)

COUNTING = (
    CampaignStatus.IN_REVIEW,
    CampaignStatus.APPROVED,
    CampaignStatus.SCHEDULED,
    CampaignStatus.SENDING,
    CampaignStatus.COMPLETED,
)
STARTED = (CampaignStatus.SENDING, CampaignStatus.COMPLETED)
REACHED = (SendStatus.PLANNED, SendStatus.SENT, SendStatus.DELIVERED, SendStatus.BOUNCED)
MAX_DAYS = 366


class Colour(enum.StrEnum):
    """How the date picker shows a day."""

    FREE = "free"
    CONFLICT = "conflict"
    """Allowed, but followers shared with another campaign would miss one."""
    UNAVAILABLE = "unavailable"
    """The rules forbid starting on it."""


@dataclass(slots=True)
class Collision:
    campaign_id: int
    start_on: date
    followers: int


@dataclass(slots=True)
class Day:
    day: date
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)

    @property
    def colour(self) -> Colour:
        if not self.allowed:
            return Colour.UNAVAILABLE
        return Colour.CONFLICT if self.collisions else Colour.FREE

    @property
    def colliding_followers(self) -> int:
        """Followers who would miss this campaign or another (the largest overlap)."""
        return max((c.followers for c in self.collisions), default=0)

    def as_json(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "allowed": self.allowed,
            "colour": self.colour.value,
            "reasons": self.reasons,
            "colliding_followers": self.colliding_followers,
            "collisions": [
                {
                    "campaign_id": c.campaign_id,
                    "start_on": c.start_on.isoformat(),
                    "followers": c.followers,
                }
                for c in self.collisions
            ],
        }


def calendar(
    session: Session,
    brand_id: int,
    first: date,
    days: int,
    *,
    now: datetime,
    campaign_id: int | None = None,
    event_id: int | None = None,
    promotion_id: int | None = None,
) -> list[Day]:
    """``days`` candidate start dates from ``first``.  With ``campaign_id``, that
    campaign's event and promotion narrow the dates and it does not collide with
    itself; ``event_id``/``promotion_id`` do the same for a campaign not yet created."""
    if not 1 <= days <= MAX_DAYS:
        raise catalog.CampaignError(f"--days must be between 1 and {MAX_DAYS}")
    catalog.get_brand(session, brand_id)
    event: ShoppingEvent | None = None
    promotion: Promotion | None = None
    main_product: int | None = None
    if campaign_id is not None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.brand_id != brand_id:
            raise catalog.CampaignError(f"brand {brand_id} has no campaign with id {campaign_id}")
        main_product = campaign.main_product_id
        event_id = event_id or campaign.event_id
        promotion_id = promotion_id or campaign.promotion_id
    if event_id is not None:
        event = catalog.get_event(session, event_id)
    if promotion_id is not None:
        promotion = catalog.get_promotion(session, promotion_id)
    standing: list[str] = []
    if promotion is not None:  # a promotion that cannot be chosen greys every day
        standing = rules.standing_problems(
            promotion,
            main_product_id=main_product if main_product is not None else promotion.product_id,
            now=now,
        )
    others = _others(session, brand_id, exclude=campaign_id)
    result = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        reasons = rules.date_problems(day, now=now, event=event, promotion=promotion) + standing
        collisions = [
            Collision(other_id, start_on, shared)
            for other_id, start_on, shared in others
            if rules.collides(day, start_on)
        ]
        result.append(Day(day, not reasons, reasons, collisions))
    return result


def _others(session: Session, brand_id: int, *, exclude: int | None) -> list[tuple[int, date, int]]:
    """The brand's campaigns that count, with the followers each shares with a
    new campaign: (id, start date, followers)."""
    campaigns = session.exec(
        select(Campaign)
        .where(Campaign.brand_id == brand_id, col(Campaign.status).in_(COUNTING))
        .order_by(col(Campaign.start_on), col(Campaign.id))
    ).all()
    active = catalog.active_followers(session, brand_id)
    result = []
    for c in campaigns:
        if c.id is None or c.id == exclude:
            continue
        shared = active
        if c.status in STARTED:
            shared = int(
                session.exec(
                    select(func.count())
                    .select_from(CampaignSend)
                    .join(Follower, col(Follower.id) == col(CampaignSend.follower_id))
                    .where(
                        CampaignSend.campaign_id == c.id,
                        col(CampaignSend.status).in_(REACHED),
                        col(Follower.unsubscribed_at).is_(None),
                    )
                ).one()
            )
        result.append((c.id, c.start_on, shared))
    return result
