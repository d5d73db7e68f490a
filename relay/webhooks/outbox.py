"""From the outbox to the endpoints: fan-out, claims with a lease, outcomes.

An event is written once (``relay.storage.events.emit``); ``fan_out`` then
makes one delivery per endpoint that asked for its type and may see it (its
scope), and marks the event as fanned out, in one transaction.  An endpoint
hears only of events made after it was registered.  Deliveries are claimed
with a lease, as mail deliveries are (``relay.delivery.spool.lease_rows``):
on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so several relays on one
database share the work and never send one delivery at the same time; a relay
that dies leaves its leases to run out, or to be released at once when it
restarts on the same host.

Delivery is at least once: a receiver that took an event but whose answer
was lost (a timeout, a crash before the outcome was written) gets it again,
with the same ``id``; receivers deduplicate on it.  A failed attempt is retried
after ``first_retry`` seconds, doubled each time up to ``max_retry_delay``;
past ``give_up_after`` from the event, the delivery is given up and its
endpoint marked failing until a delivery to it succeeds again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, insert, update
from sqlmodel import Session, col, or_, select

from relay.core.clock import as_utc
from relay.core.config import WebhooksConfig
from relay.core.scopes import Role, Scope
from relay.delivery.spool import lease_rows, release_dead_leases
from relay.ops.response_times import Overdue
from relay.storage.events import EventType, emit
from relay.storage.models import (
    Conversation,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
    utcnow,
)

PENDING = WebhookDeliveryStatus.PENDING
HEALTH_EVERY = 10.0
"""Seconds: how fresh an endpoint's ``last_success_at`` is kept."""


def has_unfanned(session: Session) -> bool:
    """Whether an event waits to be fanned out (a cheap read before a write)."""
    query = select(WebhookEvent.id).where(col(WebhookEvent.fanned_out).is_(False)).limit(1)
    return session.exec(query).first() is not None


def fan_out(session: Session, *, limit: int = 500) -> int:
    """Make the deliveries of up to ``limit`` events not fanned out yet; returns
    how many events it took.  Runs in the writer: the caller commits."""
    query = (
        select(WebhookEvent)
        .where(col(WebhookEvent.fanned_out).is_(False))
        .order_by(col(WebhookEvent.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    events = session.exec(query).all()
    if not events:
        return 0
    endpoints = [
        (e, Scope.parse(e.scope), set(e.events.split()))
        for e in session.exec(
            select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None))
        ).all()
    ]
    sellers: dict[int, int] = {}
    conversations = {e.conversation_id for e in events if e.conversation_id is not None}
    if conversations and any(scope.role is Role.SELLER for _, scope, _ in endpoints):
        rows = session.exec(
            select(Conversation.id, Conversation.seller_id).where(
                col(Conversation.id).in_(conversations)
            )
        ).all()
        sellers = {int(cid): seller for cid, seller in rows if cid is not None}
    deliveries: list[dict[str, Any]] = []
    for event in events:
        made = as_utc(event.created_at)
        for endpoint, scope, types in endpoints:
            if event.type not in types or as_utc(endpoint.created_at) > made:
                continue
            if scope.role is Role.SELLER and (
                event.conversation_id is None or sellers.get(event.conversation_id) != scope.id
            ):
                continue
            if scope.role is Role.BRAND and event.brand_id != scope.id:
                continue
            deliveries.append(
                {
                    "event_id": event.id,
                    "endpoint_id": endpoint.id,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": made,
                    "last_error": "",
                    "created_at": made,
                }
            )
    if deliveries:
        session.execute(insert(WebhookDelivery), deliveries)
    session.execute(
        update(WebhookEvent)
        .where(col(WebhookEvent.id).in_([e.id for e in events]))
        .values(fanned_out=True)
    )
    return len(events)


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery leased to this process: what to POST, where, signed with what."""

    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    url: str
    secret: str
    body: bytes
    attempts: int


def body_of(event: WebhookEvent) -> bytes:
    """The delivered JSON: the same bytes on every attempt."""
    created = as_utc(event.created_at).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    document = {
        "id": event.public_id,
        "type": event.type,
        "created": created,
        "data": json.loads(event.data),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def has_due(session: Session, now: datetime | None = None) -> bool:
    now = now or utcnow()
    query = select(WebhookDelivery.id).where(*_claimable(now)).limit(1)
    return session.exec(query).first() is not None


def _claimable(now: datetime) -> tuple[Any, ...]:
    return (
        col(WebhookDelivery.status) == PENDING,
        col(WebhookDelivery.next_attempt_at) <= now,
        or_(
            col(WebhookDelivery.claimed_until).is_(None),
            col(WebhookDelivery.claimed_until) < now,
        ),
    )


def claim(
    session: Session, worker: str, *, limit: int, lease: float, now: datetime | None = None
) -> list[Due]:
    """Lease up to ``limit`` due deliveries to ``worker`` until ``now + lease``."""
    now = now or utcnow()
    claimable = _claimable(now)
    due = (
        select(WebhookDelivery.id)
        .where(*claimable)
        .order_by(col(WebhookDelivery.next_attempt_at))
        .limit(limit)
    )
    until = now + timedelta(seconds=lease)
    ids = lease_rows(session, WebhookDelivery, due, claimable, worker=worker, until=until)
    if not ids:
        return []
    rows = session.exec(
        select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))
        .where(col(WebhookDelivery.id).in_(ids))
        .order_by(col(WebhookDelivery.id))
    ).all()
    return [
        Due(
            id=d.id or 0,
            endpoint_id=endpoint.id or 0,
            event_id=event.public_id,
            event_type=event.type,
            url=endpoint.url,
            secret=endpoint.secret,
            body=body_of(event),
            attempts=d.attempts,
        )
        for d, event, endpoint in rows
    ]


def _owned(session: Session, delivery_id: int, worker: str) -> WebhookDelivery | None:
    d = session.get(WebhookDelivery, delivery_id)
    if d is None or d.status is not PENDING or d.claimed_by != worker:
        return None
    return d


def record_delivered(session: Session, ids: Sequence[int], worker: str) -> int:
    """The receivers answered 2xx: these deliveries are done (one statement for
    the batch), and their endpoints are healthy again.  Returns how many were
    still ``worker``'s to record."""
    if not ids:
        return 0
    now = utcnow()
    result: Any = session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.id).in_(ids),
            col(WebhookDelivery.claimed_by) == worker,
            col(WebhookDelivery.status) == PENDING,
        )
        .values(
            status=WebhookDeliveryStatus.DELIVERED,
            attempts=col(WebhookDelivery.attempts) + 1,
            finished_at=now,
            claimed_by=None,
            claimed_until=None,
        )
    )
    # The endpoints' health: written when it changes or has aged, not once per
    # event (one endpoint's row would otherwise be every delivery's hot spot).
    stale = now - timedelta(seconds=HEALTH_EVERY)
    endpoints = select(WebhookDelivery.endpoint_id).where(col(WebhookDelivery.id).in_(ids))
    session.execute(
        update(WebhookEndpoint)
        .where(
            col(WebhookEndpoint.id).in_(endpoints.scalar_subquery()),
            or_(
                col(WebhookEndpoint.failing_since).is_not(None),
                col(WebhookEndpoint.last_success_at).is_(None),
                col(WebhookEndpoint.last_success_at) < stale,
            ),
        )
        .values(failing_since=None, last_success_at=now)
    )
    return int(result.rowcount)


def backoff(config: WebhooksConfig, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    return float(min(config.max_retry_delay, config.first_retry * 2 ** max(0, attempts - 1)))


def record_failed(
    session: Session, delivery_id: int, worker: str, error: str, *, config: WebhooksConfig
) -> bool:
    """An attempt failed: retry later, or give up (returns True) past
    ``give_up_after``, marking the endpoint failing."""
    d = _owned(session, delivery_id, worker)
    if d is None:
        return False
    now = utcnow()
    d.attempts += 1
    d.last_error = error[:500]
    d.claimed_by = d.claimed_until = None
    gave_up = (now - as_utc(d.created_at)).total_seconds() >= config.give_up_after
    if gave_up:
        d.status = WebhookDeliveryStatus.FAILED
        d.finished_at = now
        endpoint = session.get(WebhookEndpoint, d.endpoint_id)
        if endpoint is not None:
            endpoint.failing_since = endpoint.failing_since or now
            endpoint.last_error = d.last_error
            session.add(endpoint)
    else:
        d.next_attempt_at = now + timedelta(seconds=backoff(config, d.attempts))
    session.add(d)
    return gave_up


def release_dead_claims(session: Session) -> int:
    return release_dead_leases(session, WebhookDelivery, col(WebhookDelivery.status) == PENDING)


def report_late(session: Session, found: Sequence[Overdue]) -> int:
    """Write a ``response.late`` event for each wait ``overdue`` found (read
    outside the writer: the query walks a week of messages); returns how many
    were written.  Two relays that find the same wait write one event: its key
    is the message's."""
    written = 0
    for late in found:
        received = late.received_at.isoformat(timespec="seconds").replace("+00:00", "Z")
        written += emit(
            session,
            EventType.RESPONSE_LATE,
            {"message_id": late.message_id, "seller_id": late.seller_id, "received": received},
            conversation_id=late.conversation_id,
            message_id=late.message_id,
            dedupe_key=f"{EventType.RESPONSE_LATE.value}:{late.message_id}",
        )
    return written


def prune(session: Session, *, before: datetime) -> int:
    """Delete events made before ``before`` with no delivery still pending, and
    their deliveries; returns how many events went."""
    pending = exists().where(
        col(WebhookDelivery.event_id) == col(WebhookEvent.id),
        col(WebhookDelivery.status) == PENDING,
    )
    old = select(WebhookEvent.id).where(
        col(WebhookEvent.created_at) < before, col(WebhookEvent.fanned_out).is_(True), ~pending
    )
    ids = [i for i in session.exec(old.limit(5000)).all() if i is not None]
    if not ids:
        return 0
    session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.event_id).in_(ids)))
    session.execute(delete(WebhookEvent).where(col(WebhookEvent.id).in_(ids)))
    return len(ids)
