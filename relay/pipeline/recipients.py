"""The recipients stage: which recipients are conversations, which are bounce addresses.

At RCPT the SMTP front checked each recipient (``relay.inbound.envelope``) and
kept the route it found; at DATA the routes are reused, and looked up again
only if some are missing.  An admin may have changed the directory in between:
a recipient that no longer classifies is refused, not guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlmodel import Session

from relay.core.refusals import Refusal, Refused
from relay.core.tokens import LocalKind, classify_recipient
from relay.delivery import spool
from relay.storage import directory
from relay.storage.db import Database


@dataclass(frozen=True, slots=True)
class Recipients:
    tokens: tuple[str, ...]
    """The local parts of the conversation tokens, in RCPT order."""
    bounces: tuple[str, ...]
    """The VERP values of the bounce addresses (``bounce+VERP@``)."""


def classify(recipients: Sequence[str], *, domain: str) -> Recipients:
    """Raises Refused(UNKNOWN_RECIPIENT) for anything but a token or a bounce address
    (checked at RCPT already: an admin change raced us)."""
    kinds = [classify_recipient(r, domain) for r in recipients]
    if any(k.kind not in (LocalKind.TOKEN, LocalKind.BOUNCE) for k in kinds):
        raise Refused(Refusal.UNKNOWN_RECIPIENT)
    return Recipients(
        tokens=tuple(k.value for k in kinds if k.kind is LocalKind.TOKEN),
        bounces=tuple(k.value for k in kinds if k.kind is LocalKind.BOUNCE),
    )


def routes(
    db: Database,
    found: Recipients,
    recipients: Sequence[str],
    known: Mapping[str, directory.Route],
    *,
    envelope_from: str,
    domain: str,
) -> list[directory.Route]:
    """The route of each token recipient: those found at RCPT (``known``, by
    address), or all of them looked up again if any is missing."""
    kept = [known[r] for r in recipients if r in known]
    if len(kept) == len(found.tokens):
        return kept
    with db.session() as session:
        return [directory.route(session, t, envelope_from, domain=domain) for t in found.tokens]


def bounce_address_exists(session: Session, verp: str) -> bool:
    """Whether ``bounce+VERP@`` is the return path of a delivery the relay made."""
    return spool.verp_exists(session, verp)
