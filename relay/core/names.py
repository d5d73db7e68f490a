"""Names that people register and the relay later writes into headers.

Store names, buyer names, brand names, product titles, campaign subjects and the
marketplace's own name all end up in a header the relay writes (``From``,
``To``, ``Subject``).  Such a value is held to two lines of defence:

- ``check`` refuses a bad value where it enters (the CLI, the configuration,
  the directory functions an API calls), with an error that names the field.
  A line break or other control character, a bidirectional override (it makes a
  name read differently from what it is: ``U+202E`` turns ``gpj.exe`` around),
  something a mail program would decode as an RFC 2047 encoded word, an email
  address, or a name longer than a display line, never gets stored.
- ``for_header`` neutralises whatever is stored all the same (rows written
  before this check existed, a database edited by hand), so that no stored
  value can ever make a message fail to compose, inject a header, or carry an
  address: the worst a bad stored name can do is be shown tidied up.
"""

from __future__ import annotations

import re
import unicodedata

from relay.core.addresses import ANY_ADDRESS

MAX_NAME = 200
"""Characters in a registered name: more than any mail program shows of a
display name, and short enough that a header with it folds on a few lines."""

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings, overrides and isolates (Unicode's bidirectional algorithm).  The
marks U+200E/U+200F are allowed: right-to-left text needs them, and they cannot
reorder what follows them."""

_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
_LINE_BREAKS = frozenset("\u2028\u2029\x85")


class NameProblem(ValueError):
    """A name refused where it enters.  ``field`` is what the user calls it
    (``store name``, ``--buyer-name``), ``problem`` what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def has_address(text: str) -> bool:
    """Whether ``text`` holds something shaped like an email address, in any of
    the spellings a reader would take for one (NFKC folds the full-width at sign
    into ``@``)."""
    folded = unicodedata.normalize("NFKC", text)
    return "@" in folded and ANY_ADDRESS.search(folded) is not None


def problem(text: str, *, max_length: int = MAX_NAME, address_ok: bool = False) -> str | None:
    """What is wrong with ``text`` as a name shown in a header (None: nothing).
    ``address_ok`` leaves addresses to the caller, which words that refusal itself."""
    if not text.strip():
        return "must not be empty"
    for char in text:
        if char in BIDI_CONTROLS:
            return f"must not contain the bidirectional control U+{ord(char):04X}"
        category = unicodedata.category(char)
        if category == "Cs":
            return "is not valid Unicode"
        if category == "Cc" or char in _LINE_BREAKS:
            return (
                f"must be one line without control characters (found U+{ord(char):04X});"
                " line breaks and tabs are not allowed"
            )
    if _ENCODED_WORD.search(text):
        return "must not contain '=?…?=': mail programs would decode it as encoded text"
    if len(text) > max_length:
        return f"must be at most {max_length} characters (it has {len(text)})"
    if not address_ok and has_address(text):
        return "must not contain an email address"
    return None


def check(field: str, text: str, *, max_length: int = MAX_NAME, address_ok: bool = False) -> str:
    """``text`` without leading and trailing spaces, in Unicode's composed form
    (NFC, so that one name is stored one way); raises NameProblem naming ``field``."""
    found = problem(text, max_length=max_length, address_ok=address_ok)
    if found is not None:
        raise NameProblem(field, found)
    return unicodedata.normalize("NFC", text.strip())


def for_header(text: str, *, max_length: int = MAX_NAME) -> str:
    """``text`` made safe to write as a display name or a subject, whatever it holds.

    Control characters and line separators become spaces, runs of white space
    one space, bidirectional controls are removed, ``=?`` loses its meaning as
    the start of an encoded word, and the result is cut to ``max_length``
    characters.  Addresses are not this function's business: a display name
    that holds one is dropped by its caller (see ``display_name``)."""
    cleaned = "".join(
        " "
        if unicodedata.category(c) in ("Cc", "Cs") or c in _LINE_BREAKS
        else ""
        if c in BIDI_CONTROLS
        else c
        for c in text
    )
    cleaned = " ".join(cleaned.split()).replace("=?", "= ?")
    if len(cleaned) > max_length:
        cleaned = cleaned[: max_length - 1].rstrip() + "…"
    return cleaned


def display_name(text: str) -> str:
    """A display name for a header the relay writes: ``for_header``, and nothing
    at all if the name holds an email address (the address is the one thing a
    display name must never carry: it may be the very one the relay hides)."""
    cleaned = for_header(text)
    return "" if has_address(cleaned) else cleaned
