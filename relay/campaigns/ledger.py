"""The 7-day rule's ledger, and what a campaign message's fate does to its send.

``reserve`` is the only place where a brand may reach a customer: conditional
writes on the (brand, customer) row of ``brand_contact``, inside the
transaction that queues the message: an UPDATE that only moves a row older
than 7 days, or, for a first contact, an INSERT that does nothing if the row
exists.  Two processes queueing two campaigns of a brand for one customer at
the same moment both try; on PostgreSQL the second waits for the first's row
lock (or its uncommitted row, for the INSERT), then finds the condition false
or the row there; on SQLite the writers' transactions take turns.  So the same
customer never gets two of the brand's campaigns within 7 days, whatever the
order in which the campaigns were created and however many relays send.

The ledger records each message's *planned* time (its slot), not the moment a
dispatcher got to it: decisions then do not depend on how late a pass ran, and
two campaigns that start exactly 7 days apart reach their shared followers
both times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from relay.campaigns.models import BrandContact, CampaignSend, SendStatus
from relay.campaigns.rules import FREQUENCY
from relay.core.clock import as_utc


def reserve(
    session: Session, *, brand_id: int, buyer_id: int, campaign_id: int, at: datetime
) -> int | None:
    """Take the customer for ``campaign_id`` at ``at``: None when it may send,
    else the campaign that reached the customer less than 7 days before."""
    moved: Any = session.execute(
        update(BrandContact)
        .where(
            col(BrandContact.brand_id) == brand_id,
            col(BrandContact.buyer_id) == buyer_id,
            col(BrandContact.last_sent_at) <= at - FREQUENCY,
        )
        .values(last_sent_at=at, campaign_id=campaign_id)
    )
    if moved.rowcount == 1:
        return None
    # The first contact: the row does not exist yet.  An INSERT's rowcount is not
    # reliable here (psycopg reports -1), the row it returns is.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created = session.execute(
        insert(BrandContact)
        .values(brand_id=brand_id, buyer_id=buyer_id, last_sent_at=at, campaign_id=campaign_id)
        .on_conflict_do_nothing()
        .returning(col(BrandContact.brand_id))
    ).first()
    if created is not None:
        return None
    holder = session.exec(
        select(BrandContact.campaign_id).where(
            BrandContact.brand_id == brand_id, BrandContact.buyer_id == buyer_id
        )
    ).one()
    return int(holder)


def held_by(contact: BrandContact | None, at: datetime) -> int | None:
    """The campaign that would make ``reserve`` fail at ``at``, going by the
    brand's ledger row for the customer as last read (for skipping early)."""
    if contact is None or as_utc(contact.last_sent_at) <= as_utc(at) - FREQUENCY:
        return None
    return contact.campaign_id


_SENDS = cast(Table, CampaignSend.__table__)  # type: ignore[attr-defined]
_SEND_DELIVERED = (
    update(_SENDS)
    .where(_SENDS.c.message_id == bindparam("sent_message"), _SENDS.c.status == SendStatus.SENT)
    .values(status=SendStatus.DELIVERED)
)
_SEND_BOUNCED = (
    update(_SENDS)
    .where(_SENDS.c.message_id == bindparam("sent_message"))
    .values(status=SendStatus.BOUNCED)
)
"""Built once: they run in the transaction that records each message's outcome."""


def mark_delivered(session: Session, message_id: int) -> None:
    """The recipient's server took a campaign message."""
    session.connection().execute(_SEND_DELIVERED, {"sent_message": message_id})


def mark_bounced(session: Session, message_id: int) -> None:
    """A campaign message failed for good: refused, given up, or a DSN came back
    (after it was delivered, too: the recipient's server accepted it, then not)."""
    session.connection().execute(_SEND_BOUNCED, {"sent_message": message_id})


@dataclass(frozen=True, slots=True)
class LedgerListener:
    """What the delivery queue tells of campaign messages, put on their sends
    (a ``relay.delivery.listeners.DeliveryListener``, registered by
    ``relay.campaigns.install``)."""

    def delivered(self, session: Session, message_id: int, /) -> None:
        mark_delivered(session, message_id)

    def failed(self, session: Session, message_id: int, /) -> None:
        mark_bounced(session, message_id)
