"""``keywords``: words and phrases, matched the way a reader reads them.

Text and keywords are folded alike (NFKC, case folding, format characters
removed, diacritics too with ``fold_diacritics``), so "KHUYẾN MÃI", a decomposed
"khuyến mãi" and, with folding, "khuyen mai" all match the keyword "khuyến mãi".
A keyword matches whole words only: Unicode word boundaries, so "sale" is not
found in "wholesale" and Vietnamese syllables or Tagalog words with hyphens
(``i-promote``) work.  ``*`` at either end matches the rest of a word
(``promo*``).  Any run of white space in a phrase matches any run in the text.

    match:
      keywords:
        words: [promotion, "khuyến mãi", "i-promote"]
        fold_diacritics: true      # default false
        in: [subject, body]        # default both
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from relay.filters.base import Finding
from relay.filters.kinds.common import Settings, as_mapping, excerpt, looks_at, places
from relay.filters.normalize import fold, fold_text, fold_word
from relay.filters.registry import register
from relay.filters.view import MessageView


class KeywordSettings(Settings):
    words: list[str]
    fold_diacritics: bool = False
    in_: list[Literal["subject", "body"]] = Field(default=["subject", "body"], alias="in")


def _pattern(word: str, diacritics: bool) -> str:
    folded = fold_word(word.strip(), diacritics=diacritics)
    head = folded.startswith("*")
    tail = folded.endswith("*")
    core = folded.strip("*").strip()
    if not core:
        raise ValueError(f"keyword {word!r} has no letters")
    body = r"\s+".join(re.escape(piece) for piece in core.split())
    return (r"\w*" if head else r"(?<!\w)") + body + (r"\w*" if tail else r"(?!\w)")


_WORD = re.compile(r"\w+")


class Keywords:
    """Keywords indexed by their first word: the text is split into words once and
    only keywords starting with one of them are tried there, which is several
    times faster than one big alternation tried at every position."""

    def __init__(self, settings: KeywordSettings) -> None:
        if not settings.words:
            raise ValueError("give at least one keyword")
        self.diacritics = settings.fold_diacritics
        self.where = tuple(settings.in_)
        self.by_first_word: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
        others: list[tuple[str, re.Pattern[str]]] = []
        for word in settings.words:
            pattern = re.compile(_pattern(word, self.diacritics))
            folded = fold_word(word.strip(), diacritics=self.diacritics)
            first = _WORD.match(folded)
            if first and not folded.startswith("*") and not folded[first.end() :].startswith("*"):
                self.by_first_word.setdefault(first[0], []).append((word, pattern))
            else:  # a wildcard or punctuation first: tried everywhere
                others.append((word, pattern))
        self.others = others

    def _find(self, folded: str) -> Iterator[tuple[str, int, int]]:
        """(keyword, start, end) of the matches in already folded text."""
        if self.by_first_word:
            for m in _WORD.finditer(folded):
                for word, pattern in self.by_first_word.get(m[0], ()):
                    found = pattern.match(folded, m.start())
                    if found:
                        yield word, found.start(), found.end()
        for word, pattern in self.others:
            for found in pattern.finditer(folded):
                if found.end() > found.start():
                    yield word, found.start(), found.end()

    def _matches(self, text: str) -> Iterator[tuple[str, int, int]]:
        """(keyword, original start, original end) for every match in ``text``."""
        if next(self._find(fold_text(text, diacritics=self.diacritics)), None) is None:
            return  # the common case, decided without the offset map
        folded = fold(text, diacritics=self.diacritics)
        for word, start, end in self._find(folded.text):
            yield (word, *folded.span(start, end))

    def find(self, view: MessageView) -> Iterator[Finding]:
        for where, text in places(view.texts(), self.where):
            for word, start, end in self._matches(text):
                yield Finding(f'keyword "{word}": "{excerpt(text[start:end])}"', where)

    def spans(self, text: str, where: str) -> list[tuple[int, int]]:
        if not looks_at(where, self.where):
            return []
        return [(s, e) for _w, s, e in self._matches(text)]


@register("keywords")
def keywords(value: Any) -> Keywords:
    return Keywords(KeywordSettings.model_validate(as_mapping(value, "words")))
