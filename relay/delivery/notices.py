"""Bounce-back notices to the original sender (README, "What senders are told").

A notice says what happened and why, names the conversation by the token the
sender wrote to, and never reveals the other party's real address.  It is sent
with a null envelope sender and ``Auto-Submitted: auto-replied`` (RFC 3834), is
archived like any message, and goes through the same durable queue.  No notice
answers a notice, a bounce, a null-sender message or auto-submitted mail: that
is how two auto-responders are kept from talking to each other forever.
"""

from __future__ import annotations

import textwrap
from email.message import EmailMessage
from email.utils import formatdate

from sqlmodel import Session

from relay.core import addresses, names
from relay.core.config import RelayConfig
from relay.core.tokens import token_address
from relay.message import mailpolicy
from relay.message.parse import TRACE_HEADER
from relay.message.threading_ids import new_message_id
from relay.message.tokenizer import AddressMap
from relay.storage import directory
from relay.storage.archive import Archive
from relay.storage.models import Buyer, Conversation, Delivery, Direction, Message, MessageStatus


def optout_reason(config: RelayConfig) -> str:
    tag = config.optout.important_tag
    return (
        "The buyer has opted out of unsolicited messages from sellers, so your message was"
        " not delivered.\n\n"
        "If your message is critical to completing an order (for example a question about"
        " shipping, product customization or scheduling a delivery), send it again with"
        f" {tag} in the subject, exactly like that, brackets included. Only use it for"
        " messages that are necessary to complete the order."
    )


def sanitize(text: str, amap: AddressMap, domain: str) -> str:
    """Replace the parties' addresses by tokens and hide any other address, so a
    remote server's diagnostic ("550 <buyer@example.net>: no such user") leaks nothing."""
    return addresses.mask_addresses(amap.replace(text), keep_domain=domain)


def create_notice(
    session: Session,
    archive: Archive,
    config: RelayConfig,
    *,
    about: Message,
    what: str,
    why: str,
) -> Message | None:
    """Queue one notice to the sender of ``about``; None when none may be sent."""
    if about.direction is Direction.NOTICE or about.auto_submitted or not about.envelope_from:
        return None
    conv = session.get(Conversation, about.conversation_id) if about.conversation_id else None
    domain = config.marketplace.domain
    token = ""
    if conv is not None:
        token = token_address(
            conv.buyer_token if about.direction is Direction.SELLER_TO_BUYER else conv.seller_token,
            domain,
        )
    subject = about.subject or "(no subject)"
    body = [
        f"This is an automatic notice from the messaging system of {config.marketplace.name}.",
        "",
        f"Your message {subject!r}" + (f" to {token}" if token else "") + f" {what}.",
        "",
        why.strip(),
        "",
        "This notice was sent automatically; replies to it are not read.",
    ]
    msg = EmailMessage()
    sender = f"{config.marketplace.notice_sender}@{domain}"
    msg["From"] = addresses.format_address(names.display_name(config.marketplace.name), sender)
    msg["To"] = about.envelope_from
    msg["Subject"] = names.for_header(f"Undelivered message: {subject}", max_length=900)
    msg["Date"] = formatdate(localtime=False)
    relay_id = new_message_id(domain)
    msg["Message-ID"] = relay_id
    if about.original_message_id:
        msg["In-Reply-To"] = about.original_message_id
        msg["References"] = about.original_message_id
    msg["Auto-Submitted"] = "auto-replied"
    msg[TRACE_HEADER] = config.smtp.hostname
    if token:
        msg["X-Marketplace-Conversation"] = token
    msg.set_content(_wrap("\n".join(body)))
    data = msg.as_bytes(policy=mailpolicy.SMTP)
    path = archive.store(data, "notice")
    notice = Message(
        conversation_id=about.conversation_id,
        direction=Direction.NOTICE,
        status=MessageStatus.QUEUED,
        status_reason=what,
        envelope_from="",
        recipient=about.envelope_from,
        subject=str(msg["Subject"]),
        relay_message_id=relay_id,
        auto_submitted=True,
        about_message_id=about.id,
        trace_id=about.trace_id,
        received_path=None,
        delivered_path=path,
    )
    session.add(notice)
    session.flush()
    assert notice.id is not None
    session.add(Delivery(message_id=notice.id, envelope_from="", recipient=about.envelope_from))
    return notice


def party_map(session: Session, about: Message, domain: str) -> AddressMap:
    """Tokens for both parties of ``about``'s conversation (for sanitizing text)."""
    return conversation_party_map(session, about.conversation_id, domain)


def conversation_party_map(
    session: Session, conversation_id: int | None, domain: str
) -> AddressMap:
    """Tokens for both parties of a conversation: real address → token address."""
    if conversation_id is None:
        return AddressMap({})
    conv = session.get(Conversation, conversation_id)
    if conv is None:
        return AddressMap({})
    buyer = session.get(Buyer, conv.buyer_id)
    mapping: dict[str, str] = {}
    for addr in directory.seller_addresses(session, conv.seller_id):
        mapping[addr.email] = token_address(conv.seller_token, domain)
    if buyer is not None:
        mapping[buyer.email] = token_address(conv.buyer_token, domain)
    return AddressMap(mapping)


def _wrap(text: str) -> str:
    """Paragraphs wrapped at 72 columns, so the notice reads well as plain text."""
    return (
        "\n".join(
            textwrap.fill(line, 72, break_long_words=False, break_on_hyphens=False) if line else ""
            for line in text.split("\n")
        )
        + "\n"
    )
