"""An admin's decision on a quarantined message (``relay quarantine release|reject``).

Not part of accepting mail: the message was accepted, archived as received and
held earlier; here an admin overrules the rule that held it, or agrees with
it.  Either way the decision is written by the record stage, as accepting
would have written it, inside the caller's transaction.  Refusals are
``DirectoryError``: the admin asked for something the directory cannot do.
"""

from __future__ import annotations

from dataclasses import replace

from sqlmodel import Session, col, select

from relay.core.config import RelayConfig
from relay.core.refusals import Refused
from relay.filters import Action, RuleSet, Verdict, evaluate
from relay.message.parse import parse
from relay.pipeline import decide, record
from relay.pipeline.filtering import role
from relay.pipeline.verdicts import Deliver, Outcome, RuleRejected
from relay.storage import directory
from relay.storage.archive import Archive
from relay.storage.events import EventType, message_event
from relay.storage.models import Conversation, Direction, Message, MessageStatus, RuleHit, utcnow


def release(
    session: Session, message_id: int, *, config: RelayConfig, archive: Archive, rules: RuleSet
) -> Outcome:
    """Deliver a quarantined message as an admin decided.

    The message as received is filtered again with the current rules, so that
    ``strip`` and ``redact`` still apply; ``reject`` and ``quarantine`` hits no
    longer hold it (the admin has overruled them).  An opted-out buyer still
    does not get it.  The caller commits.
    """
    message = _quarantined(session, message_id)
    if message.received_path is None or message.conversation_id is None:
        raise directory.DirectoryError(f"message {message_id} has no archived copy to release")
    raw = archive.read(message.received_path)
    conv = session.get(Conversation, message.conversation_id)
    assert conv is not None
    to_seller = message.direction is Direction.BUYER_TO_SELLER
    token = conv.seller_token if to_seller else conv.buyer_token
    try:
        route = directory.route(
            session, token, message.envelope_from, domain=config.marketplace.domain
        )
    except Refused as exc:
        raise directory.DirectoryError(f"message {message_id} cannot be released: {exc}") from None
    parsed = parse(raw, hostname=config.smtp.hostname, max_hops=10**6)
    verdict = evaluate(rules, parsed.message, role(route))
    verdict = Verdict(
        tuple(h for h in verdict.hits if h.action < Action.QUARANTINE), verdict.redact_marker
    )
    message.updated_at = utcnow()
    plan = decide.plan(session, route, parsed, verdict, config=config, archive=archive)
    if isinstance(plan.decision, Deliver):
        plan = replace(plan, decision=replace(plan.decision, released=True))
        message_event(session, EventType.MESSAGE_RELEASED, message)
    return record.settle(session, message, plan, config=config, archive=archive)


def reject(
    session: Session, message_id: int, *, config: RelayConfig, archive: Archive, rules: RuleSet
) -> Outcome:
    """Refuse a quarantined message: the sender gets the notice of the rule that
    held it (as the current rules word it)."""
    message = _quarantined(session, message_id)
    assert message.id is not None
    rule_id = _holding_rule(session, message.id)
    rule = next((r for r in rules.rules if r.id == rule_id), None)
    decision = RuleRejected(rule_id, rule.notice if rule else "", by_admin=True)
    message.updated_at = utcnow()
    record.not_delivered(session, message, decision, config=config, archive=archive)
    return Outcome(
        message.id, decision.status, direction=message.direction, blocked=decision.blocked
    )


def _holding_rule(session: Session, message_id: int) -> str:
    """The rule that quarantined the message: its first quarantine hit, which is the
    filters' deciding hit (hits are recorded in the verdict's order)."""
    rule_id = session.exec(
        select(RuleHit.rule_id)
        .where(RuleHit.message_id == message_id, RuleHit.action == Action.QUARANTINE.label)
        .order_by(col(RuleHit.id))
    ).first()
    if rule_id is None:
        raise directory.DirectoryError(f"message {message_id} was not held by a rule")
    return rule_id


def _quarantined(session: Session, message_id: int) -> Message:
    message = session.get(Message, message_id, with_for_update=True)
    if message is None:
        raise directory.NotFound(f"no message with id {message_id}")
    if message.status is not MessageStatus.QUARANTINED:
        raise directory.Conflict(f"message {message_id} is {message.status.value}, not quarantined")
    return message
