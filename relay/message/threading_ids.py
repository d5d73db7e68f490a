"""Message-ID mapping between the two sides of a conversation (README: both clients thread).

Every delivered message gets a Message-ID of ours.  When one side replies, its
``In-Reply-To``/``References`` name either our IDs (for messages it received from
the other side) or its own IDs (for messages it sent).  For the recipient we
translate each reference into the ID *the recipient* knows the message by:

- our ID of a message the recipient wrote → the recipient's own original ID;
- our ID of a message the sender wrote → unchanged (that is what the recipient got);
- the sender's own original ID → our ID (what the recipient got);
- anything else → dropped: it names the sender's mail host and would thread nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, insert
from sqlmodel import Session, col, or_, select

from relay.storage.models import MessageIdMap, Party, utcnow


def new_message_id(domain: str) -> str:
    return f"<{secrets.token_hex(12)}@{domain}>"


def map_references(
    session: Session,
    conversation_id: int,
    refs: Sequence[str],
    *,
    recipient: Party,
) -> list[str]:
    """``refs`` as the recipient knows them, in order, duplicates removed."""
    if not refs:
        return []
    rows = session.exec(
        select(MessageIdMap).where(
            MessageIdMap.conversation_id == conversation_id,
            or_(col(MessageIdMap.relay_id).in_(refs), col(MessageIdMap.original_id).in_(refs)),
        )
    ).all()
    by_relay = {r.relay_id: r for r in rows}
    by_original = {r.original_id: r for r in rows if r.original_id}
    mapped: list[str] = []
    for ref in refs:
        out: str | None = None
        if ref in by_relay:
            row = by_relay[ref]
            out = row.original_id if row.author is recipient else row.relay_id
        elif ref in by_original:
            row = by_original[ref]
            out = row.relay_id if row.author is not recipient else row.original_id
        if out and out not in mapped:
            mapped.append(out)
    return mapped


def record(
    session: Session,
    conversation_id: int,
    *,
    author: Party,
    original_id: str | None,
    relay_id: str,
) -> None:
    session.connection().execute(
        _NEW_MAPPING,
        {
            "conversation_id": conversation_id,
            "author": author,
            "original_id": original_id,
            "relay_id": relay_id,
            "created_at": utcnow(),
        },
    )


_NEW_MAPPING = insert(cast(Table, MessageIdMap.__table__))  # type: ignore[attr-defined]
"""Built once: every queued message writes one mapping."""
