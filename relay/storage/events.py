"""What the marketplace hears of: events, written to the outbox with the change.

Every change that a webhook reports (a message delivered, blocked or held, a
campaign's status, a follower leaving...) calls ``emit`` inside the transaction
that makes the change, so the two commit together or not at all: an event is
never sent for a change that was rolled back, and a change that committed
always has its event, whatever happens to the process next (a SIGKILL
included).  Sending is ``relay.webhooks``' business, later and elsewhere.

Events carry ids and tokens only.  Their payloads end up in the marketplace's
logs and third-party queues, so every string in them is scrubbed of anything
that looks like an email address (``scrub``), whatever the caller passed.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from relay.storage.models import Direction, Message, WebhookEvent, utcnow


class EventType(enum.StrEnum):
    """The events a webhook can ask for (README, "Webhooks")."""

    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_BLOCKED = "message.blocked"
    """Not delivered: the buyer opted out, a rule rejected it, or it was unreadable."""
    MESSAGE_QUARANTINED = "message.quarantined"
    MESSAGE_RELEASED = "message.released"
    DELIVERY_FAILED = "delivery.failed"
    RESPONSE_LATE = "response.late"
    """A buyer message passed 24 hours with no answer from the seller."""
    CAMPAIGN_STATUS_CHANGED = "campaign.status_changed"
    FOLLOWER_UNSUBSCRIBED = "follower.unsubscribed"

    @property
    def about_brand(self) -> bool:
        """A brand's event (a brand key's webhook may ask for it); the others are
        a conversation's, which a seller key's webhook may ask for."""
        return self in (EventType.CAMPAIGN_STATUS_CHANGED, EventType.FOLLOWER_UNSUBSCRIBED)


_ADDRESS = re.compile(r"[^\s<>()\[\]\",;:@]+@[^\s<>()\[\]\"',;:@]+")
"""Anything address-like: an apostrophe is a letter of a local part (``o'neil@``)."""
ADDRESS_MARK = "[address]"


def scrub(value: Any) -> Any:
    """``value`` with every email address in its strings replaced by ``[address]``."""
    if isinstance(value, str):
        return _ADDRESS.sub(ADDRESS_MARK, value)
    if isinstance(value, Mapping):
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def emit(
    session: Session,
    type: EventType,
    data: Mapping[str, Any],
    *,
    conversation_id: int | None = None,
    brand_id: int | None = None,
    message_id: int | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Write an event to the outbox, in the caller's transaction.

    ``conversation_id`` and ``brand_id`` say whose it is (which scoped
    webhooks hear of it); they are added to ``data`` too.  With
    ``dedupe_key``, an event with the same key already written (by this
    relay or another one on the same database) makes this one a no-op;
    returns whether the event was written.
    """
    body = dict(data)
    if conversation_id is not None:
        body.setdefault("conversation_id", conversation_id)
    if brand_id is not None:
        body.setdefault("brand_id", brand_id)
    values = {
        "public_id": new_event_id(),
        "type": type.value,
        "data": json.dumps(scrub(body), ensure_ascii=False, separators=(",", ":")),
        "conversation_id": conversation_id,
        "brand_id": brand_id,
        "message_id": message_id,
        "dedupe_key": dedupe_key,
        "fanned_out": False,
        "created_at": utcnow(),
    }
    conn = session.connection()
    if dedupe_key is None:
        conn.execute(_NEW_EVENT, values)
        return True
    result = conn.execute(_NEW_EVENT_ONCE[conn.dialect.name == "postgresql"], values)
    return bool(result.rowcount)


_EVENTS = cast(Table, WebhookEvent.__table__)  # type: ignore[attr-defined]
_NEW_EVENT = insert(_EVENTS)
_NEW_EVENT_ONCE = {
    False: sqlite.insert(_EVENTS).on_conflict_do_nothing(),
    True: postgresql.insert(_EVENTS).on_conflict_do_nothing(),
}
"""Built once (by whether the database is PostgreSQL): the values come as
parameters, so an event costs an execute, not a statement's construction."""


def message_event(session: Session, type: EventType, message: Message, **data: Any) -> None:
    """The event of what became of ``message`` (a conversation's), in this transaction."""
    message_event_of(
        session,
        type,
        message_id=message.id,
        direction=message.direction,
        conversation_id=message.conversation_id,
        **data,
    )


def message_event_of(
    session: Session,
    type: EventType,
    *,
    message_id: int | None,
    direction: Direction,
    conversation_id: int | None,
    **data: Any,
) -> None:
    """``message_event`` for a message known by its id, direction and
    conversation, without its row."""
    emit(
        session,
        type,
        {"message_id": message_id, "direction": direction.value, **data},
        conversation_id=conversation_id,
        message_id=message_id,
    )
