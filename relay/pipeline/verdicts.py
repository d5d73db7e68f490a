"""The typed values the stages hand each other: what is decided, and what became of it.

A stage says what it decided with one of the decision types below, never with a
string; the texts the outside world sees are derived from the decision in one
place each: ``status_reason`` (written to the message's row, shown by
``relay archive show``), ``blocked`` (the ``reason`` label of
``relay_messages_blocked``) and ``why`` (the sentence of the sender's notice).
The filters' own ``relay.filters.Verdict`` is the rules' verdict on one copy;
the decisions here are the pipeline's, which also weighs the opt-out and
whether the message can be rewritten at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.filters import Action, Verdict
from relay.storage.directory import Route
from relay.storage.models import Direction, MessageStatus


class Blocked(enum.StrEnum):
    """Why an accepted message is not delivered, as the metrics count it."""

    RULE = "rule"
    """A filter rule said ``reject``."""
    QUARANTINE = "quarantine"
    OPT_OUT = "opt_out"
    UNREADABLE = "unreadable"
    """It could not be rewritten safely."""


class Report(enum.StrEnum):
    """What became of mail to a bounce address (it has no message row)."""

    IGNORED = "ignored"
    """Not a delivery report."""
    FAILED = "dsn_failed"
    DELAYED = "dsn_delayed"


_RELEASED = "released from quarantine"
_BY_ADMIN = ", by an admin"


@dataclass(frozen=True, slots=True)
class Deliver:
    """The message is rewritten and archived: it is to be queued for delivery."""

    relay_id: str
    original_id: str | None
    delivered_path: str
    released: bool = False
    """An admin released it from quarantine."""

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.QUEUED

    @property
    def status_reason(self) -> str:
        return _RELEASED if self.released else ""

    @property
    def blocked(self) -> Blocked | None:
        return None

    @property
    def why(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Held:
    """A filter rule quarantined the message: it waits for an admin."""

    rule_id: str

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.QUARANTINED

    @property
    def status_reason(self) -> str:
        return f"rule {self.rule_id}"

    @property
    def blocked(self) -> Blocked | None:
        return Blocked.QUARANTINE

    @property
    def why(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class RuleRejected:
    """A filter rule refused the message, or an admin refused what a rule held."""

    rule_id: str
    notice: str = ""
    """The rule's notice for the sender ("" for the generic sentence)."""
    by_admin: bool = False

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.REJECTED

    @property
    def status_reason(self) -> str:
        return f"rule {self.rule_id}{_BY_ADMIN if self.by_admin else ''}"

    @property
    def blocked(self) -> Blocked | None:
        return Blocked.RULE

    @property
    def why(self) -> str:
        return self.notice or f"It breaks the marketplace's messaging rules ({self.rule_id})."


@dataclass(frozen=True, slots=True)
class OptedOut:
    """The buyer opted out of unsolicited messages and nothing exempts this one."""

    why: str
    """The notice's explanation (it names the configured important tag)."""

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.BLOCKED

    @property
    def status_reason(self) -> str:
        return "buyer opted out"

    @property
    def blocked(self) -> Blocked | None:
        return Blocked.OPT_OUT


class Unreadable(enum.Enum):
    """The message cannot be rewritten safely, so it is not passed on."""

    MALFORMED = (
        "could not be rewritten",
        "Its structure is too damaged to be passed on (for example broken MIME"
        " headers). Please send it again from your mail program as a new message.",
    )
    UNSAFE = (
        "could not be tokenized",
        "It contains a part in which your email address could not be replaced"
        " safely. Please send the text without that part.",
    )

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.REJECTED

    @property
    def status_reason(self) -> str:
        reason: str = self.value[0]
        return reason

    @property
    def blocked(self) -> Blocked | None:
        return Blocked.UNREADABLE

    @property
    def why(self) -> str:
        why: str = self.value[1]
        return why


NotDelivered = RuleRejected | OptedOut | Unreadable
"""The decisions whose sender gets a notice."""

Decision = Deliver | Held | NotDelivered
"""What becomes of a message for one recipient."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What becomes of a message for one recipient, decided before any write."""

    route: Route
    verdict: Verdict
    """The filters' verdict on this recipient's copy (its hits are recorded)."""
    decision: Decision


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one recipient of an accepted message (for logs, metrics, tests)."""

    message_id: int | None
    status: MessageStatus | Report
    direction: Direction | None = None
    """None for mail to a bounce address."""
    blocked: Blocked | None = None
    """Why it is not delivered, for the metrics."""
    hits: tuple[tuple[str, Action], ...] = ()
    """(rule id, action) of each filter hit."""

    @property
    def direction_label(self) -> str:
        """The ``direction`` label of the metrics: ``dsn`` for bounce reports."""
        return self.direction.value if self.direction is not None else "dsn"
