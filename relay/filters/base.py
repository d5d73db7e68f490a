"""Types of the filter stage: detection (Matcher) kept apart from action (Rule)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import ClassVar, Protocol


class Action(enum.IntEnum):
    """Ordered by severity, so ``max()`` picks the winner (SPEC §5)."""

    FLAG = 1
    REDACT = 2
    STRIP = 3
    QUARANTINE = 4
    REJECT = 5

    @property
    def label(self) -> str:
        return self.name.lower()


class Role(enum.StrEnum):
    SELLER = "seller"
    BUYER = "buyer"


@dataclass(frozen=True, slots=True)
class FilterInput:
    """What a matcher may look at: the parsed message and who sent it."""

    message: EmailMessage
    role: Role


class Matcher(Protocol):
    kind: ClassVar[str]

    def find(self, item: FilterInput, /) -> list[str]:
        """Descriptions of what matched (empty: no match). Pure and synchronous."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str
    applies_to: frozenset[Role]
    matcher: Matcher
    action: Action
    notice: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    rule_id: str
    action: Action
    detail: str
    notice: str = ""


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    hits: tuple[Hit, ...] = field(default_factory=tuple)

    @property
    def action(self) -> Action | None:
        return max((h.action for h in self.hits), default=None)

    @property
    def deciding(self) -> Hit | None:
        """The first hit with the winning action: its notice text is the one sent."""
        action = self.action
        return next((h for h in self.hits if h.action is action), None)
