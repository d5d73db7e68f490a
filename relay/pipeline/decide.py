"""The decide stage: what becomes of the message for one recipient, before any write.

In order (README, walk-through): a rule's ``reject`` or ``quarantine`` decides
alone; then the buyer's opt-out; then the rules' ``strip`` and ``redact`` are
applied to the copy and it is rewritten for its recipient.  Reads only: the
record stage writes what was decided.
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from relay.core.config import RelayConfig
from relay.core.logs import redact
from relay.delivery.notices import optout_reason
from relay.filters import Action, Verdict
from relay.filters import actions as filter_actions
from relay.message.parse import ParsedMail, reparse
from relay.pipeline.rewrite import rewrite
from relay.pipeline.verdicts import Held, OptedOut, Plan, RuleRejected
from relay.storage import directory
from relay.storage.archive import Archive
from relay.storage.directory import Route
from relay.storage.models import Direction

log = logging.getLogger("relay.pipeline")


def plan(
    reads: Session,
    route: Route,
    parsed: ParsedMail,
    verdict: Verdict,
    *,
    config: RelayConfig,
    archive: Archive,
) -> Plan:
    """Decide for one recipient and, if the message is to be delivered, rewrite and
    archive its copy (``parsed``: changed in place, unless other recipients share it)."""
    deciding = verdict.deciding
    if verdict.action is Action.REJECT and deciding is not None:
        return Plan(route, verdict, RuleRejected(deciding.rule_id, deciding.notice))
    if verdict.action is Action.QUARANTINE and deciding is not None:
        return Plan(route, verdict, Held(deciding.rule_id))
    if blocked_by_optout(reads, route, parsed, config=config):
        return Plan(route, verdict, OptedOut(optout_reason(config)))
    if parsed.shared and (verdict.acting(Action.STRIP) or verdict.acting(Action.REDACT)):
        parsed = reparse(parsed)  # the rules change this copy: it needs one of its own
    changes = filter_actions.apply(parsed.message, verdict, marketplace=config.marketplace.name)
    if changes:
        log.info("conversation %s: %s", route.conversation_id, redact("; ".join(changes)))
    decision = rewrite(reads, route, parsed, config=config, archive=archive, unchanged=not changes)
    return Plan(route, verdict, decision)


def blocked_by_optout(
    session: Session, route: Route, parsed: ParsedMail, *, config: RelayConfig
) -> bool:
    """The opt-out (README, walk-through step 5): an opted-out buyer only gets a
    seller's message if it is marked important, the buyer started the
    conversation, or an order is exempt."""
    if route.direction is not Direction.SELLER_TO_BUYER or not route.buyer_opted_out:
        return False
    if config.optout.important_tag in parsed.subject:
        return False
    if route.buyer_initiated:
        return False
    categories = directory.conversation_categories(session, route.conversation_id)
    return not categories & {c.lower() for c in config.optout.exempt_categories}
