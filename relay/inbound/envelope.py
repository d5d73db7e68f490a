"""The SMTP front's envelope checks: one RCPT TO, before any message data.

A recipient outside the marketplace's domain is relaying; a token that does not
exist, or a bounce address the relay never handed out, is unknown; a sender
that may not write to the token is refused by the directory
(``directory.route``); and the hourly limits per sender and per conversation
(``limits.messages_per_sender``, ``limits.messages_per_conversation``) are
checked here, at RCPT, so that a sender over them never gets to send the data.
All of it raises ``Refused``; the server turns it into the reply.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from relay.core.config import RelayConfig
from relay.core.refusals import Refusal, Refused
from relay.core.tokens import LocalKind, classify_recipient
from relay.pipeline.recipients import bounce_address_exists
from relay.storage import directory
from relay.storage.models import utcnow


def check_recipient(
    session: Session, envelope_from: str, address: str, *, config: RelayConfig
) -> directory.Route | None:
    """Envelope checks for one RCPT TO (README, SMTP replies).  Returns the route
    (None for a bounce address), which the pipeline reuses at DATA."""
    rcpt = classify_recipient(address, config.marketplace.domain)
    if rcpt.kind is LocalKind.FOREIGN:
        raise Refused(Refusal.RELAY_DENIED)
    if rcpt.kind is LocalKind.UNKNOWN:
        raise Refused(Refusal.UNKNOWN_RECIPIENT)
    if rcpt.kind is LocalKind.BOUNCE:
        if not bounce_address_exists(session, rcpt.value):
            raise Refused(Refusal.UNKNOWN_RECIPIENT)
        return None
    route = directory.route(session, rcpt.value, envelope_from, domain=config.marketplace.domain)
    limits = config.limits
    sent, recent = directory.recent_counts(
        session,
        since=utcnow() - timedelta(hours=1),
        envelope_from=envelope_from,
        sender_up_to=limits.messages_per_sender,
        conversation_id=route.conversation_id,
        direction=route.direction,
        conversation_up_to=limits.messages_per_conversation,
    )
    if sent >= limits.messages_per_sender:
        raise Refused(Refusal.SENDER_RATE)
    if recent >= limits.messages_per_conversation:
        raise Refused(Refusal.CONVERSATION_RATE)
    return route
