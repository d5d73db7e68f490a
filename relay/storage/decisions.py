"""Who decided what: the log of moderation and quarantine decisions.

Every approval, rejection, release and refusal is written here in the same
transaction as the decision itself, with who made it (a console user, an API
key or the command line), so that an admin can trust what the archive and the
campaigns' histories say.  The actions are a closed set (``Action``); the
actor is ``console:USERNAME``, ``api-key:ID`` or ``cli``; the subject names
what was decided on: ``message 12``, ``campaign 3``, ``promotion 4``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlmodel import Session, col, select

from relay.core.clock import as_utc
from relay.storage.models import Decision

P = ParamSpec("P")
T = TypeVar("T")

CLI = "cli"
"""The actor of a decision made with the ``relay`` command."""
HIDDEN_ACTOR = "moderation"
"""The actor as shown to those who may not see who moderates (a brand)."""


class Action(enum.StrEnum):
    """Every kind of decision the log knows."""

    QUARANTINE_RELEASE = "quarantine.release"
    QUARANTINE_REJECT = "quarantine.reject"
    CAMPAIGN_APPROVE = "campaign.approve"
    CAMPAIGN_REJECT = "campaign.reject"
    PROMOTION_APPROVE = "promotion.approve"
    PROMOTION_REJECT = "promotion.reject"


def api_key_actor(key_id: int) -> str:
    return f"api-key:{key_id}"


def message_subject(message_id: int) -> str:
    return f"message {message_id}"


def campaign_subject(campaign_id: int) -> str:
    return f"campaign {campaign_id}"


def promotion_subject(promotion_id: int) -> str:
    return f"promotion {promotion_id}"


def record(session: Session, *, actor: str, action: str, subject: str, detail: str = "") -> None:
    """Log one decision in ``session`` (the caller commits it with the decision).
    ``action`` must be one of ``Action`` (ValueError otherwise)."""
    session.add(
        Decision(actor=actor, action=Action(action).value, subject=subject, detail=detail[:1000])
    )


def recorded(
    fn: Callable[Concatenate[Session, P], T],
    *,
    actor: str,
    action: Action,
    subject: str,
    detail: str = "",
) -> Callable[Concatenate[Session, P], T]:
    """``fn`` followed by the record of its decision, in the same session: for the
    database's ``write``/``call``, which run one function in one transaction.
    Nothing is recorded when ``fn`` raises (the decision was refused)."""

    def both(session: Session, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result = fn(session, *args, **kwargs)
        record(session, actor=actor, action=action, subject=subject, detail=detail)
        return result

    return both


def about(session: Session, subject: str) -> list[Decision]:
    """The decisions about one subject (``campaign 3``), oldest first."""
    rows = session.exec(
        select(Decision).where(Decision.subject == subject).order_by(col(Decision.id))
    ).all()
    return list(rows)


def listed(session: Session, subject: str, *, with_actor: bool = True) -> list[dict[str, Any]]:
    """The decisions about ``subject`` as the CLI and the API print them; the actor
    is ``HIDDEN_ACTOR`` unless ``with_actor`` (who moderates is the marketplace's)."""
    return [
        {
            "at": as_utc(d.at).isoformat(),
            "actor": d.actor if with_actor else HIDDEN_ACTOR,
            "action": d.action,
            "detail": d.detail,
        }
        for d in about(session, subject)
    ]


def describe(decision: dict[str, Any]) -> str:
    """One line of ``listed`` for the CLI's text output."""
    detail = f": {decision['detail']}" if decision["detail"] else ""
    return f"{decision['at']} {decision['action']} by {decision['actor']}{detail}"
