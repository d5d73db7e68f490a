"""The record stage: the writes of one message, in the database's one write transaction.

Everything was decided before (``decide``) and every file is archived and
fsynced; what is left is inserting the rows — the message of each recipient,
its rule hits, its delivery or its sender's notice — and, for mail to a bounce
address, what the delivery report says.  ``record`` runs in the group-commit
writer (``Database.write``) and the SMTP server answers 250 only after it is
committed.  ``settle`` is also how an admin's quarantine decision is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, bindparam, func, insert, update
from sqlmodel import Session

from relay.core import metrics
from relay.core.config import RelayConfig
from relay.delivery import spool
from relay.delivery.dsn import read_dsn
from relay.delivery.notices import create_notice
from relay.filters import Verdict
from relay.message import threading_ids
from relay.message.parse import ParsedMail
from relay.pipeline.verdicts import (
    Deliver,
    Held,
    NotDelivered,
    Outcome,
    Plan,
    Report,
    RuleRejected,
)
from relay.storage.archive import Archive
from relay.storage.db import inserted_id
from relay.storage.directory import Route
from relay.storage.events import EventType, message_event
from relay.storage.models import Conversation, Direction, Message, MessageStatus, RuleHit, utcnow

log = logging.getLogger("relay.pipeline")


def record(
    session: Session,
    *,
    config: RelayConfig,
    archive: Archive,
    envelope_from: str,
    received_path: str,
    parsed: ParsedMail,
    bounces: Sequence[str],
    plans: Sequence[Plan],
    trace_id: str | None = None,
) -> list[Outcome]:
    """The writes of one message (the caller commits)."""
    outcomes = [_bounce(session, verp, parsed, config=config, archive=archive) for verp in bounces]
    for plan in plans:
        decision = plan.decision
        if isinstance(decision, Deliver):  # the common case, without the ORM
            now = utcnow()
            message_id = inserted_id(
                session.connection(),
                _NEW_MESSAGE,
                {
                    "conversation_id": plan.route.conversation_id,
                    "direction": plan.route.direction,
                    "status": MessageStatus.QUEUED,
                    "status_reason": "",
                    "envelope_from": envelope_from,
                    "recipient": plan.route.recipient,
                    "subject": parsed.subject[:998],
                    "original_message_id": parsed.message_id,
                    "relay_message_id": decision.relay_id,
                    "auto_submitted": parsed.auto_submitted or not envelope_from,
                    "about_message_id": None,
                    "received_path": received_path,
                    "delivered_path": decision.delivered_path,
                    "trace_id": trace_id,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            _record_hits(session, message_id, plan.verdict)
            _queue(session, message_id, plan.route, decision, config=config)
            outcomes.append(_outcome(message_id, plan))
            continue
        message = Message(
            trace_id=trace_id,
            conversation_id=plan.route.conversation_id,
            direction=plan.route.direction,
            status=MessageStatus.QUEUED,
            envelope_from=envelope_from,
            recipient=plan.route.recipient,
            subject=parsed.subject[:998],
            original_message_id=parsed.message_id,
            auto_submitted=parsed.auto_submitted or not envelope_from,
            received_path=received_path,
        )
        session.add(message)
        session.flush()
        assert message.id is not None
        _record_hits(session, message.id, plan.verdict)
        outcomes.append(settle(session, message, plan, config=config, archive=archive))
    return outcomes


_MESSAGES = cast(Table, Message.__table__)  # type: ignore[attr-defined]
_CONVERSATIONS = cast(Table, Conversation.__table__)  # type: ignore[attr-defined]
_NEW_MESSAGE = insert(_MESSAGES)
_NEW_RULE_HIT = insert(cast(Table, RuleHit.__table__))  # type: ignore[attr-defined]
_FIRST_TRAFFIC = {
    # The conversation exists from its first message on; a buyer's message
    # makes it buyer-initiated.  Either statement keeps an earlier first_message_at.
    direction: update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == bindparam("conversation_id"))
    .values(
        first_message_at=func.coalesce(
            _CONVERSATIONS.c.first_message_at,
            bindparam("now", type_=_CONVERSATIONS.c.first_message_at.type),
        ),
        **({"buyer_initiated": True} if direction is Direction.BUYER_TO_SELLER else {}),
    )
    for direction in (Direction.BUYER_TO_SELLER, Direction.SELLER_TO_BUYER)
}
"""Built once: a message's rows cost executes, not statement construction."""


def settle(
    session: Session, message: Message, plan: Plan, *, config: RelayConfig, archive: Archive
) -> Outcome:
    """Write what ``decide`` decided for ``message`` (the caller commits)."""
    decision = plan.decision
    if isinstance(decision, Deliver):
        assert message.id is not None
        message.status = MessageStatus.QUEUED
        if decision.status_reason:
            message.status_reason = decision.status_reason
        message.delivered_path = decision.delivered_path
        message.relay_message_id = decision.relay_id
        session.add(message)
        _queue(session, message.id, plan.route, decision, config=config)
    elif isinstance(decision, Held):
        message.status = decision.status
        message.status_reason = decision.status_reason
        session.add(message)
        message_event(session, EventType.MESSAGE_QUARANTINED, message, rule_id=decision.rule_id)
        log.info(
            "message %s quarantined (%s)",
            message.id,
            message.status_reason,
            extra={"fields": {"trace": message.trace_id}},
        )
    else:
        not_delivered(session, message, decision, config=config, archive=archive)
    return _outcome(message.id, plan)


def not_delivered(
    session: Session,
    message: Message,
    decision: NotDelivered,
    *,
    config: RelayConfig,
    archive: Archive,
) -> None:
    """Mark ``message`` as not delivered and tell its sender why."""
    message.status = decision.status
    message.status_reason = decision.status_reason
    session.add(message)
    session.flush()
    rejected = decision if isinstance(decision, RuleRejected) else None
    message_event(
        session,
        EventType.MESSAGE_BLOCKED,
        message,
        reason=decision.blocked.value if decision.blocked else None,
        rule_id=rejected.rule_id if rejected else None,
        by_admin=rejected.by_admin if rejected else False,
    )
    create_notice(
        session, archive, config, about=message, what="was not delivered", why=decision.why
    )
    log.info(
        "message %s %s (%s)",
        message.id,
        message.status.value,
        message.status_reason,
        extra={"fields": {"trace": message.trace_id}},
    )


def _queue(
    session: Session, message_id: int, route: Route, deliver: Deliver, *, config: RelayConfig
) -> None:
    """Enqueue the delivery of a QUEUED message and record what threading and
    the conversation need to know of it."""
    spool.enqueue(session, message_id, recipient=route.recipient, domain=config.marketplace.domain)
    threading_ids.record(
        session,
        route.conversation_id,
        author=route.sender_party,
        original_id=deliver.original_id,
        relay_id=deliver.relay_id,
    )
    if not route.has_traffic or (
        route.direction is Direction.BUYER_TO_SELLER and not route.buyer_initiated
    ):
        session.connection().execute(
            _FIRST_TRAFFIC[route.direction],
            {"conversation_id": route.conversation_id, "now": utcnow()},
        )
    log.debug("message %s queued for conversation %s", message_id, route.conversation_id)


def _outcome(message_id: int | None, plan: Plan) -> Outcome:
    return Outcome(
        message_id,
        plan.decision.status,
        direction=plan.route.direction,
        blocked=plan.decision.blocked,
        hits=tuple((h.rule_id, h.action) for h in plan.verdict.hits),
    )


def _record_hits(session: Session, message_id: int, verdict: Verdict) -> None:
    if not verdict.hits:
        return
    session.connection().execute(
        _NEW_RULE_HIT,
        [
            {
                "message_id": message_id,
                "rule_id": hit.rule_id,
                "action": hit.action.label,
                "detail": hit.detail[:1000],
                "location": hit.where[:200],
            }
            for hit in verdict.hits
        ],
    )


def _bounce(
    session: Session, verp: str, parsed: ParsedMail, *, config: RelayConfig, archive: Archive
) -> Outcome:
    verdict = read_dsn(parsed.message)
    if verdict is None:
        log.info("mail to a bounce address is not a delivery report; ignored")
        return Outcome(None, Report.IGNORED)
    spool.record_dsn(
        session,
        verp,
        permanent=verdict.permanent,
        status=verdict.status,
        diagnostic=verdict.diagnostic,
        archive=archive,
        config=config,
    )
    return Outcome(None, Report.FAILED if verdict.permanent else Report.DELAYED)


def count(outcomes: Sequence[Outcome]) -> None:
    """Count committed outcomes in the metrics."""
    for o in outcomes:
        metrics.RECEIVED.labels(o.direction_label).inc()
        if o.blocked is not None:
            metrics.BLOCKED.labels(o.direction_label, o.blocked.value).inc()
        for rule, action in o.hits:
            metrics.FILTER_HITS.labels(rule, action.label).inc()
