"""Who decided what: the log of moderation and quarantine decisions.

Every approval, rejection, release and refusal is written here in the same
transaction as the decision itself, with who made it (a console user, an API
key or the command line), so that an admin can trust what the archive and the
campaigns' histories say.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from relay.storage.models import Decision


def record(session: Session, *, actor: str, action: str, subject: str, detail: str = "") -> None:
    session.add(Decision(actor=actor, action=action, subject=subject, detail=detail[:1000]))


def about(session: Session, subject: str) -> list[Decision]:
    """The decisions about one subject (``campaign 3``), oldest first."""
    rows = session.exec(
        select(Decision).where(Decision.subject == subject).order_by(col(Decision.id))
    ).all()
    return list(rows)
