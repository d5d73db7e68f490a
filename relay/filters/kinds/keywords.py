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
from relay.filters.kinds.common import Settings, as_mapping, excerpt, places, replace_spans
from relay.filters.normalize import fold, fold_word
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


class Keywords:
    def __init__(self, settings: KeywordSettings) -> None:
        if not settings.words:
            raise ValueError("give at least one keyword")
        self.diacritics = settings.fold_diacritics
        self.where = tuple(settings.in_)
        self.words = list(settings.words)
        self.patterns = [re.compile(_pattern(w, self.diacritics)) for w in self.words]
        self.combined = re.compile("|".join(f"(?:{p.pattern})" for p in self.patterns))

    def _matches(self, text: str) -> Iterator[tuple[str, int, int]]:
        """(keyword, original start, original end) for every match in ``text``."""
        folded = fold(text, diacritics=self.diacritics)
        for m in self.combined.finditer(folded.text):
            if m.end() == m.start():
                continue
            word = next(
                (w for w, p in zip(self.words, self.patterns, strict=True) if p.fullmatch(m[0])),
                m[0],
            )
            start, end = folded.span(m.start(), m.end())
            yield word, start, end

    def find(self, view: MessageView) -> Iterator[Finding]:
        for where, text in places(view.texts(), self.where):
            for word, start, end in self._matches(text):
                yield Finding(f'keyword "{word}": "{excerpt(text[start:end])}"', where)

    def redact(self, text: str, marker: str) -> str:
        return replace_spans(text, [(s, e) for _w, s, e in self._matches(text)], marker)


@register("keywords")
def keywords(value: Any) -> Keywords:
    return Keywords(KeywordSettings.model_validate(as_mapping(value, "words")))
