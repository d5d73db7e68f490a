"""The relay's tables (sqlmodel).

Timestamps are timezone-aware UTC (``utcnow()``) on both back ends.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from relay.core import clock


def utcnow() -> datetime:
    return clock.now()


class Direction(enum.StrEnum):
    BUYER_TO_SELLER = "buyer_to_seller"
    SELLER_TO_BUYER = "seller_to_buyer"
    NOTICE = "notice"
    CAMPAIGN = "campaign"
    """A brand's campaign message to a follower (``relay.campaigns``)."""


class Party(enum.StrEnum):
    BUYER = "buyer"
    SELLER = "seller"


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"
    """Accepted; its delivery is in the outbound queue."""
    DELIVERED = "delivered"
    BLOCKED = "blocked"
    """Not delivered because the buyer opted out of unsolicited messages."""
    REJECTED = "rejected"
    """Not delivered because a filter rule said ``reject``."""
    QUARANTINED = "quarantined"
    FAILED = "failed"
    """Delivery given up, refused with a 5xx, or bounced by the recipient's server."""


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    """Accepted downstream, then a DSN reported a permanent failure."""


class Seller(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    messaging_enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class SellerAddress(SQLModel, table=True):
    __tablename__ = "seller_address"
    id: int | None = Field(default=None, primary_key=True)
    seller_id: int = Field(foreign_key="seller.id", index=True)
    email: str = Field(unique=True)
    """Normalized (see ``addresses.normalize``); one address belongs to one seller."""
    is_primary: bool = False


class Buyer(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True)
    name: str = ""
    opted_out: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("buyer_id", "seller_id"),)
    id: int | None = Field(default=None, primary_key=True)
    buyer_id: int = Field(foreign_key="buyer.id", index=True)
    seller_id: int = Field(foreign_key="seller.id", index=True)
    buyer_token: str = Field(unique=True)
    seller_token: str = Field(unique=True)
    buyer_initiated: bool = False
    first_message_at: datetime | None = None
    """When a message first passed in either direction: the conversation exists."""
    created_at: datetime = Field(default_factory=utcnow)


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    id: str = Field(primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    categories: str = ""
    """Space-separated, lower-case category names."""
    created_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    """One archived message: what one recipient of one inbound mail was to get."""

    __table_args__ = (
        Index("ix_message_conv_created", "conversation_id", "created_at"),
        Index("ix_message_sender_created", "envelope_from", "created_at"),
    )
    """For the hourly rate limits per conversation and per sender."""
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id")
    direction: Direction
    status: MessageStatus
    status_reason: str = ""
    envelope_from: str = ""
    """The real envelope sender ("" for a null sender)."""
    recipient: str = ""
    """The real address the message is (or would have been) delivered to."""
    subject: str = ""
    original_message_id: str | None = None
    relay_message_id: str | None = None
    auto_submitted: bool = False
    """Auto-submitted, a bounce, or null-sender mail: never answered with a notice."""
    about_message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    """For a notice: the message it reports on."""
    received_path: str | None = None
    delivered_path: str | None = None
    trace_id: str | None = None
    """The SMTP transaction that brought it (shared by all its recipients'
    rows and its notices): the key that follows a message through the logs."""
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class RuleHit(SQLModel, table=True):
    __tablename__ = "rule_hit"
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    rule_id: str
    action: str
    detail: str = ""
    location: str = ""
    """Where in the message: subject, text body, HTML body, header X, an attachment."""


class Delivery(SQLModel, table=True):
    __table_args__ = (Index("ix_delivery_due", "status", "next_attempt_at"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    envelope_from: str
    """The return path: a VERP address on our domain, or "" for a notice."""
    verp: str | None = Field(default=None, unique=True)
    recipient: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_reply: str = ""
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempt"
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="delivery.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    outcome: str
    """delivered, deferred, failed, gave_up, dsn_failed, dsn_delayed, ..."""
    reply: str = ""


class MessageIdMap(SQLModel, table=True):
    """Threading: which relay Message-ID stands for which sender Message-ID.

    Scoped to a conversation so that references can never be mapped across
    conversations.
    """

    __tablename__ = "message_id_map"
    __table_args__ = (
        UniqueConstraint("conversation_id", "relay_id"),
        Index("ix_msgid_original", "conversation_id", "original_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id")
    author: Party
    original_id: str | None = None
    relay_id: str
    created_at: datetime = Field(default_factory=utcnow)


class ResponseMark(SQLModel, table=True):
    """A seller's "no response needed" on a conversation: it stops the response
    clock of every buyer message before ``at`` that was still unanswered."""

    __tablename__ = "response_mark"
    __table_args__ = (Index("ix_response_mark_conv_at", "conversation_id", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id")
    at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    """A key of the HTTP API.  Only the SHA-256 of the key is kept: the key is
    shown once, when it is made, and a stolen database holds no usable key (the
    keys are 256 random bits, so a plain hash is not open to guessing)."""

    __tablename__ = "api_key"
    id: int | None = Field(default=None, primary_key=True)
    name: str = ""
    scope: str
    """``admin``, ``seller:ID`` or ``brand:ID`` (``relay.core.scopes``)."""
    key_hash: str = Field(unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class WebhookEndpoint(SQLModel, table=True):
    """A URL the marketplace registered to hear of events (``relay.webhooks``).

    The secret is kept as it is, not hashed: the relay signs every delivery
    with it (HMAC), so it must be able to read it back."""

    __tablename__ = "webhook_endpoint"
    id: int | None = Field(default=None, primary_key=True)
    url: str
    events: str
    """The event types it wants, space-separated."""
    scope: str
    """The scope of the key that registered it (``admin``, ``seller:ID``,
    ``brand:ID``): it hears only of what that key may see."""
    secret: str
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    deleted_at: datetime | None = None
    failing_since: datetime | None = None
    """Set when a delivery to it was given up; cleared by the next success."""
    last_error: str = ""
    last_success_at: datetime | None = None


class WebhookEvent(SQLModel, table=True):
    """The outbox: one row per change the marketplace may hear of, written in
    the transaction of the change itself (``relay.storage.events.emit``)."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        Index("ix_webhook_event_fanout", "fanned_out", "id"),
        Index("ix_webhook_event_type_message", "type", "message_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(unique=True)
    """``evt_...``: the ``id`` receivers see, the same on every retry."""
    type: str
    data: str
    """The JSON object of the event's ``data``: ids and tokens, never an address."""
    conversation_id: int | None = None
    """Whose it is, for endpoints of a seller's key (via the conversation)."""
    brand_id: int | None = None
    """Whose it is, for endpoints of a brand's key."""
    message_id: int | None = None
    dedupe_key: str | None = Field(default=None, unique=True)
    """For events that several relays may find at once (``response.late``)."""
    fanned_out: bool = False
    """Whether its deliveries to the subscribed endpoints exist yet."""
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up after ``webhooks.give_up_after``."""
    CANCELLED = "cancelled"
    """Its endpoint was deleted first."""


class WebhookDelivery(SQLModel, table=True):
    """One event to one endpoint, claimed with a lease like a mail delivery."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        UniqueConstraint("event_id", "endpoint_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="webhook_event.id", index=True)
    endpoint_id: int = Field(foreign_key="webhook_endpoint.id", index=True)
    status: WebhookDeliveryStatus = WebhookDeliveryStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str = ""
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class ConsoleUser(SQLModel, table=True):
    """A person who signs in to the web console (``relay console user add``).

    Only an Argon2id hash of the password is kept (memory-hard: a stolen
    database does not give the passwords away to a GPU farm)."""

    __tablename__ = "console_user"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True)
    role: str
    """``admin``, ``moderator``, ``brand:ID`` or ``seller:ID``."""
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow)


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser: the cookie holds the token, the row its SHA-256."""

    __tablename__ = "console_session"
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True)
    user_id: int = Field(foreign_key="console_user.id", index=True)
    csrf: str
    """The token every form of this session carries (synchronizer token)."""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class Decision(SQLModel, table=True):
    """Who decided what: every moderation and quarantine decision, by anyone."""

    __tablename__ = "decision"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str
    """``console:USERNAME``, ``api-key:ID`` or ``cli``."""
    action: str
    subject: str
    """What it was about: ``campaign 3``, ``message 12``, ``promotion 4``."""
    detail: str = ""


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"
    id: int = Field(default=1, primary_key=True)
    version: int


__all__ = [
    "ApiKey",
    "Buyer",
    "ConsoleSession",
    "ConsoleUser",
    "Conversation",
    "Decision",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryStatus",
    "Direction",
    "Message",
    "MessageIdMap",
    "MessageStatus",
    "Order",
    "Party",
    "ResponseMark",
    "RuleHit",
    "SchemaVersion",
    "Seller",
    "SellerAddress",
    "WebhookDelivery",
    "WebhookDeliveryStatus",
    "WebhookEndpoint",
    "WebhookEvent",
]
