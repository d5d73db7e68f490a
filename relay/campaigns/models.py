"""The tables of brand campaigns.

A brand (registered, with a store page) has followers: marketplace customers,
who are ``Buyer`` rows, the same people the buyer-seller relay knows, so a
buyer's global opt-out reaches campaigns too.  A campaign shows a main product
(and up to four more) of its brand, optionally a promotion on the main product
and a shopping-event theme, and goes through the statuses of ``CampaignStatus``;
every change is a ``CampaignStatusChange`` row.  When it starts sending, one
``CampaignSend`` row per follower plans that follower's message; the row
records what became of it.  ``BrandContact`` is the 7-day rule's ledger: when a
brand last reached a customer, and with which campaign.

Times are timezone-aware UTC (``relay.core.clock``); start dates and event dates are
calendar dates in UTC.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from relay.storage.models import utcnow


class CampaignKind(enum.StrEnum):
    NEW_PRODUCT = "new_product"
    SPOTLIGHT = "spotlight"
    GIFT_GUIDE = "gift_guide"
    PROMOTION = "promotion"
    """Promotion details of the featured products: needs a promotion."""


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    NOT_APPROVED = "not_approved"
    """Rejected by moderation: final, the brand creates a new campaign."""
    SCHEDULED = "scheduled"
    """Taken up by the dispatcher of a running relay: it starts on its date."""
    SENDING = "sending"
    COMPLETED = "completed"
    SUSPENDED = "suspended"
    """Its promotion was rejected or cancelled before it started: never sent."""
    CANCELLED = "cancelled"
    """Withdrawn by the brand (the rest of its messages are not sent)."""


FINAL_STATUSES = frozenset(
    {
        CampaignStatus.NOT_APPROVED,
        CampaignStatus.COMPLETED,
        CampaignStatus.SUSPENDED,
        CampaignStatus.CANCELLED,
    }
)


class PromotionKind(enum.StrEnum):
    PERCENT_OFF = "percent_off"
    AMOUNT_OFF = "amount_off"


class PromotionStatus(enum.StrEnum):
    PENDING = "pending"
    """Waiting for the marketplace's approval: not eligible yet."""
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class SendStatus(enum.StrEnum):
    PLANNED = "planned"
    SENT = "sent"
    """Handed to the outbound queue."""
    DELIVERED = "delivered"
    """Sent, and accepted by the recipient's server (kept here, not read off the
    message, so the report outlives the archive's retention)."""
    BOUNCED = "bounced"
    """Sent, then refused for good by the recipient's server (or given up)."""
    SKIPPED_7_DAYS = "skipped_7_days"
    """The brand reached this customer with another campaign less than 7 days before."""
    UNSUBSCRIBED = "unsubscribed"
    """The follower had unsubscribed from the brand when its turn came."""
    OPTED_OUT = "opted_out"
    """The customer has opted out of unsolicited messages (globally)."""
    WITHDRAWN = "withdrawn"
    """The campaign was cancelled or suspended before this follower's turn."""


class Brand(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    registered: bool = False
    """Enrolled in the marketplace's brand registry."""
    store_page: bool = False
    """Has a store page on the marketplace (what followers follow)."""
    created_at: datetime = Field(default_factory=utcnow)


class Follower(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("brand_id", "buyer_id"),)
    id: int | None = Field(default=None, primary_key=True)
    brand_id: int = Field(foreign_key="brand.id", index=True)
    buyer_id: int = Field(foreign_key="buyer.id", index=True)
    followed_since: datetime = Field(default_factory=utcnow)
    unsubscribed_at: datetime | None = None
    unsubscribed_campaign_id: int | None = None
    """The campaign whose unsubscribe link or header was used, if any."""


class Product(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    brand_id: int = Field(foreign_key="brand.id", index=True)
    sku: str = Field(unique=True)
    """The marketplace's product identifier (shown in the product's link)."""
    title: str
    price: str = ""
    """As displayed, currency included (``250,000 ₫``)."""
    description: str = ""


class Promotion(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="product.id", index=True)
    kind: PromotionKind
    discount: str
    """A decimal number: a percentage for ``percent_off``, an amount (in
    ``campaigns.currency``) for ``amount_off``."""
    starts_at: datetime
    ends_at: datetime
    status: PromotionStatus = PromotionStatus.PENDING
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ShoppingEvent(SQLModel, table=True):
    __tablename__ = "shopping_event"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    starts_on: date
    ends_on: date
    """Inclusive."""


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    brand_id: int = Field(foreign_key="brand.id", index=True)
    kind: CampaignKind
    main_product_id: int = Field(foreign_key="product.id")
    promotion_id: int | None = Field(default=None, foreign_key="promotion.id", index=True)
    event_id: int | None = Field(default=None, foreign_key="shopping_event.id")
    subject: str
    content: str
    """The brand's text, plain; the template puts it in both alternatives."""
    start_on: date
    status: CampaignStatus = CampaignStatus.DRAFT
    status_reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CampaignProduct(SQLModel, table=True):
    """The featured products besides the main one, in order (at most four)."""

    __tablename__ = "campaign_product"
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    position: int = Field(primary_key=True)
    product_id: int = Field(foreign_key="product.id")


class CampaignStatusChange(SQLModel, table=True):
    __tablename__ = "campaign_status_change"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    status: CampaignStatus
    at: datetime = Field(default_factory=utcnow)
    reason: str = ""


class CampaignSend(SQLModel, table=True):
    """One follower's message of one campaign: planned, then what became of it."""

    __tablename__ = "campaign_send"
    __table_args__ = (
        UniqueConstraint("campaign_id", "buyer_id"),
        Index("ix_campaign_send_due", "status", "due_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    follower_id: int = Field(foreign_key="follower.id")
    buyer_id: int = Field(foreign_key="buyer.id")
    due_at: datetime
    status: SendStatus = SendStatus.PLANNED
    token: str = Field(unique=True)
    """The unsubscribe link's key: names the follower and the campaign, and is
    unguessable."""
    skipped_for_campaign_id: int | None = None
    """For ``skipped_7_days``: the campaign that reached the customer first."""
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    """The archived message (cleared if retention purges it)."""
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    done_at: datetime | None = None


class BrandContact(SQLModel, table=True):
    """When the brand last reached the customer: the 7-day rule's ledger.

    One row per (brand, customer), taken by a conditional write at send time, so
    two processes sending two campaigns of one brand to one customer at the same
    moment cannot both succeed."""

    __tablename__ = "brand_contact"
    brand_id: int = Field(foreign_key="brand.id", primary_key=True)
    buyer_id: int = Field(foreign_key="buyer.id", primary_key=True)
    last_sent_at: datetime
    campaign_id: int = Field(foreign_key="campaign.id")


__all__ = [
    "FINAL_STATUSES",
    "Brand",
    "BrandContact",
    "Campaign",
    "CampaignKind",
    "CampaignProduct",
    "CampaignSend",
    "CampaignStatus",
    "CampaignStatusChange",
    "Follower",
    "Product",
    "Promotion",
    "PromotionKind",
    "PromotionStatus",
    "SendStatus",
    "ShoppingEvent",
]
