"""``regex`` and ``header``: regular expressions, safe against catastrophic backtracking.

Patterns use the ``regex`` module's syntax (a superset of Python's ``re``) and
are compiled once, when the rules are loaded.  Every search runs with a time
bound: a pattern that backtracks catastrophically on some input gives up after
``timeout`` seconds and the rule counts as matched ("fail closed"), so a
crafted message can neither stall the relay nor slip past a rule.

    match:
      regex:
        patterns: ['\\b(?:whats\\s*app|zalo|viber)\\b']
        in: [subject, body]      # default both
        ignore_case: true        # default true
        timeout: 0.2             # seconds per search, default 0.2

    match:
      header:
        - {name: X-Mailer, pattern: 'MassMailer'}
        - {name: List-Unsubscribe, pattern: '.'}   # any value: the header is present
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import regex
from pydantic import Field, TypeAdapter

from relay.filters.base import Finding
from relay.filters.kinds.common import Settings, as_mapping, excerpt, looks_at, places
from relay.filters.registry import register
from relay.filters.view import MessageView

DEFAULT_TIMEOUT = 0.2


def quoted(pattern: str) -> str:
    """A pattern as the admin wrote it in filters.yaml, ``'\\d+'`` and not ``'\\\\d+'``:
    ``repr`` doubles every backslash.  ``repr`` only for a pattern with characters
    that a terminal would not show as they are."""
    return f"'{pattern}'" if pattern.isprintable() else repr(pattern)


def compile_pattern(pattern: str, ignore_case: bool) -> regex.Pattern[str]:
    flags = regex.VERSION1 | regex.UNICODE | (regex.IGNORECASE if ignore_case else 0)
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression {quoted(pattern)}: {exc}") from None


class RegexSettings(Settings):
    patterns: list[str]
    in_: list[Literal["subject", "body"]] = Field(default=["subject", "body"], alias="in")
    ignore_case: bool = True
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=10)


class Regex:
    def __init__(self, settings: RegexSettings) -> None:
        if not settings.patterns:
            raise ValueError("give at least one pattern")
        self.where = tuple(settings.in_)
        self.timeout = settings.timeout
        self.compiled = [compile_pattern(p, settings.ignore_case) for p in settings.patterns]

    def _spans(
        self, text: str
    ) -> Iterator[tuple[regex.Pattern[str], int, int] | regex.Pattern[str]]:
        """Match spans, or the bare pattern when its search timed out."""
        for pattern in self.compiled:
            try:
                for m in pattern.finditer(text, timeout=self.timeout):
                    if m.end() > m.start():
                        yield pattern, m.start(), m.end()
            except TimeoutError:
                yield pattern

    def find(self, view: MessageView) -> Iterator[Finding]:
        for where, text in places(view.texts(), self.where):
            for found in self._spans(text):
                if isinstance(found, tuple):
                    pattern, start, end = found
                    yield Finding(
                        f'pattern {quoted(pattern.pattern)}: "{excerpt(text[start:end])}"', where
                    )
                else:
                    yield Finding(
                        f"pattern {quoted(found.pattern)} timed out after {self.timeout}s"
                        " (treated as a match)",
                        where,
                    )

    def spans(self, text: str, where: str) -> list[tuple[int, int]]:
        if not looks_at(where, self.where):
            return []
        return [(f[1], f[2]) for f in self._spans(text) if isinstance(f, tuple)]


class HeaderTest(Settings):
    name: str = Field(min_length=1)
    pattern: str
    ignore_case: bool = True


class Header:
    def __init__(self, tests: list[HeaderTest], timeout: float = DEFAULT_TIMEOUT) -> None:
        if not tests:
            raise ValueError("give at least one {name, pattern} test")
        self.tests = [(t.name.lower(), compile_pattern(t.pattern, t.ignore_case)) for t in tests]
        self.timeout = timeout

    def find(self, view: MessageView) -> Iterator[Finding]:
        for name, value in view.headers:
            for wanted, pattern in self.tests:
                if name.lower() != wanted:
                    continue
                try:
                    m = pattern.search(value, timeout=self.timeout)
                except TimeoutError:
                    yield Finding(
                        f"pattern {quoted(pattern.pattern)} timed out (treated as a match)",
                        f"header {name}",
                    )
                    continue
                if m is not None:
                    yield Finding(
                        f'"{excerpt(value)}" matches {quoted(pattern.pattern)}', f"header {name}"
                    )


@register("regex")
def regex_kind(value: Any) -> Regex:
    return Regex(RegexSettings.model_validate(as_mapping(value, "patterns")))


@register("header")
def header_kind(value: Any) -> Header:
    if isinstance(value, list):
        return Header(_HEADER_TESTS.validate_python(value))
    return Header([HeaderTest.model_validate(value)])


_HEADER_TESTS = TypeAdapter(list[HeaderTest])
