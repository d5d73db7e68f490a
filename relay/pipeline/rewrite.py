"""The rewrite stage: the copy the recipient gets, archived before anything is written.

The sender and the recipient are shown as their tokens (the buyer by the name
the marketplace shows sellers), the threading headers are mapped to the
relay's own Message-IDs, and ``compose`` keeps only the allowed headers and
replaces every real address.  A message that cannot be rewritten safely is not
passed on (``Unreadable``): its sender is told why.  Reads only; the delivered
copy is written to the archive (and fsynced) here, before the write
transaction, so that a committed row never points at a missing file.
"""

from __future__ import annotations

from dataclasses import replace

from sqlmodel import Session

from relay.core.config import RelayConfig
from relay.message import threading_ids
from relay.message.compose import MalformedMessage, Party, UnsafeMessage, compose
from relay.message.parse import ParsedMail
from relay.pipeline.verdicts import Deliver, Unreadable
from relay.storage.archive import Archive
from relay.storage.directory import Route
from relay.storage.models import Direction
from relay.storage.models import Party as Side


def rewrite(
    reads: Session,
    route: Route,
    parsed: ParsedMail,
    *,
    config: RelayConfig,
    archive: Archive,
    unchanged: bool = False,
) -> Deliver | Unreadable:
    """Rewrite ``parsed`` for the recipient of ``route`` and archive it.

    ``unchanged``: nothing (no rule) has changed ``parsed.message`` since it was
    parsed from ``parsed.source``, so that a body with nothing to replace can be
    delivered as the bytes it arrived as.  Otherwise ``parsed.message`` is
    rewritten in place."""
    market = config.marketplace
    buyer = Party(
        display_name=market.buyer_display_format.format(
            name=route.buyer_name or "Buyer", marketplace=market.name
        ),
        token=route.buyer_token,
        real=(route.buyer_email,),
    )
    seller = Party(
        display_name=route.seller_name, token=route.seller_token, real=route.seller_emails
    )
    if route.direction is Direction.BUYER_TO_SELLER:
        sender, recipient = buyer, seller
    else:  # the buyer is addressed by name, not by the name sellers see
        sender, recipient = seller, replace(buyer, display_name=route.buyer_name)
    recipient_side = Side.SELLER if route.direction is Direction.BUYER_TO_SELLER else Side.BUYER
    relay_id = threading_ids.new_message_id(market.domain)
    in_reply_to = threading_ids.map_references(
        reads, route.conversation_id, parsed.in_reply_to, recipient=recipient_side
    )
    references = threading_ids.map_references(
        reads,
        route.conversation_id,
        parsed.references or parsed.in_reply_to,
        recipient=recipient_side,
    )
    try:
        out = compose(
            parsed.message,
            sender=sender,
            recipient=recipient,
            message_id=relay_id,
            in_reply_to=in_reply_to[:1],
            references=references,
            hostname=config.smtp.hostname,
            source=parsed.source if unchanged else None,
            shared=parsed.shared,
        )
    except MalformedMessage:
        return Unreadable.MALFORMED
    except UnsafeMessage:
        return Unreadable.UNSAFE
    return Deliver(
        relay_id=relay_id,
        original_id=parsed.message_id,
        delivered_path=archive.store(out.data, "delivered"),
    )
