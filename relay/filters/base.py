"""Types of the filter stage: detection (Matcher) kept apart from action (Rule).

A matcher only says what it found and where; the admin's rule decides what
happens.  Two optional abilities let a matcher take part in the actions that
change a message: ``spans`` (the text ``redact`` replaces) and ``strip_html`` (drop
elements of an HTML body); findings that name a ``part`` can be stripped by any
matcher.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from relay.filters.view import MessageView


class Action(enum.IntEnum):
    """Ordered by severity, so ``max()`` picks the winner (docs/filters.md)."""

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
class Finding:
    """One thing a matcher found."""

    detail: str
    """What matched, for the archive: ``keyword "khuyến mãi"``, ``link to evil.com``."""
    where: str = ""
    """Where: ``subject``, ``text body``, ``HTML body``, ``header X-Foo``, an attachment."""
    part: int | None = None
    """The offending MIME part (``message.walk()`` order), for ``strip``."""


class Matcher(Protocol):
    """What a match kind provides: ``find``.  Pure, synchronous, thread-safe."""

    def find(self, view: MessageView, /) -> Iterable[Finding | str]: ...


@runtime_checkable
class Redacting(Protocol):
    def spans(self, text: str, where: str, /) -> list[tuple[int, int]]:
        """(start, end) of every match in ``text``, found at ``where`` (``subject``,
        ``text body``, ``HTML body``); empty where the rule does not look."""
        ...


@runtime_checkable
class HtmlStripping(Protocol):
    def strip_html(self, source: str, note: str, /) -> tuple[str, set[str]]:
        """The HTML without the offending elements (each replaced by ``note``), and
        the Content-IDs they referenced (``cid:`` images to remove with them)."""
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
    rule: Rule
    finding: Finding

    @property
    def rule_id(self) -> str:
        return self.rule.id

    @property
    def action(self) -> Action:
        return self.rule.action

    @property
    def notice(self) -> str:
        return self.rule.notice

    @property
    def detail(self) -> str:
        return self.finding.detail

    @property
    def where(self) -> str:
        return self.finding.where


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    source: str = ""
    redact_marker: str = "[redacted]"


@dataclass(frozen=True, slots=True)
class Verdict:
    hits: tuple[Hit, ...] = field(default_factory=tuple)
    redact_marker: str = "[redacted]"

    @property
    def action(self) -> Action | None:
        return max((h.action for h in self.hits), default=None)

    @property
    def deciding(self) -> Hit | None:
        """The first hit with the winning action: its notice text is the one sent."""
        action = self.action
        return next((h for h in self.hits if h.action is action), None)

    def acting(self, action: Action) -> list[Hit]:
        return [h for h in self.hits if h.action is action]
