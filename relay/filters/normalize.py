"""Unicode-aware text folding for keyword rules, with a map back to the original.

Rules are written by admins in English, Vietnamese and Tagalog; messages arrive
precomposed or decomposed, in full-width forms, mixed case, with zero-width
characters slipped between letters.  Folding makes them comparable: NFKC, case
folding, format characters (U+200B, soft hyphen…) removed and, optionally,
diacritics removed ("khuyến mãi" → "khuyen mai").

Redaction must replace the text as the recipient would see it, so folding keeps,
for every folded character, the span of original text it came from.  Text is
folded one grapheme-ish cluster (a base character and its combining marks) at a
time, which is what makes that map possible.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import regex

_EXTRA_FOLDS = str.maketrans({"đ": "d", "ð": "d", "ħ": "h", "\u0131": "i", "ł": "l", "ø": "o"})
"""Letters with a stroke do not decompose into base + mark; Vietnamese đ matters most."""


@dataclass(frozen=True, slots=True)
class Folded:
    """Folded text; ``starts[i]``/``ends[i]`` locate folded char ``i`` in the original."""

    text: str
    starts: tuple[int, ...] | None
    ends: tuple[int, ...] | None
    """``None`` for both: the folding kept every offset (plain ASCII)."""

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of folded ``text[start:end]`` (``end > start``)."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


_FORMAT = regex.compile(r"\p{Cf}+")
_MARKS = regex.compile(r"\p{M}+")


def fold_text(text: str, *, diacritics: bool) -> str:
    """The folded text without the map back: whole-string operations, in C.

    Used to find out cheaply whether a rule matches at all; only a message that
    matches pays for ``fold`` (a Python loop over the text) to locate the match.
    It removes at least what ``fold`` removes, so it never misses a match.
    """
    if text.isascii():
        return text.lower()
    s = _FORMAT.sub("", unicodedata.normalize("NFKC", text).casefold())
    if diacritics:
        s = _MARKS.sub("", unicodedata.normalize("NFD", s))
        s = unicodedata.normalize("NFC", s.translate(_EXTRA_FOLDS))
    return s


def fold_word(text: str, *, diacritics: bool) -> str:
    """Fold a rule's keyword the way message text is folded."""
    return fold(text, diacritics=diacritics).text


def fold(text: str, *, diacritics: bool) -> Folded:
    if text.isascii():
        return Folded(text.lower(), None, None)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and unicodedata.combining(text[j]):
            j += 1
        piece = _fold_cluster(text[i:j], diacritics)
        out.append(piece)
        starts.extend([i] * len(piece))
        ends.extend([j] * len(piece))
        i = j
    return Folded("".join(out), tuple(starts), tuple(ends))


@lru_cache(maxsize=4096)
def _fold_cluster(cluster: str, diacritics: bool) -> str:
    if unicodedata.category(cluster[0]) == "Cf":  # zero-width space, soft hyphen, bidi marks
        return ""
    s = unicodedata.normalize("NFKC", cluster).casefold()
    if diacritics:
        s = "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c))
        s = unicodedata.normalize("NFC", s.translate(_EXTRA_FOLDS))
    return s
