"""The top-level header section as bytes: where it ends, its fields, and header
fields written and folded without the ``email`` object model.

A copy whose body needs no rewriting is a new header section followed by the
body exactly as it arrived (``relay.message.compose``).  Writing that section
through the ``email`` package costs more than everything else the copy needs:
each value set is parsed into a structured header, and each header written is
folded again through its parse tree.  The relay writes a small, known set of
headers, so this module writes them directly:

- ``split`` finds the end of the header section in the received bytes and reads
  its fields the way the ``email`` parser stores them, so that the caller can
  check the two readings agree (and use the ``email`` package when they do not);
- ``text_field``, ``address_field`` and ``raw_field`` write one header, folded at
  78 characters with CRLF (RFC 5322 §2.1.1, §2.2.3).  Text that is not printable
  ASCII becomes RFC 2047 encoded words, or stays UTF-8 for a recipient reached
  with SMTPUTF8 (RFC 6532).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from email.headerregistry import Address

LINE = 78
"""Characters per header line, CRLF not counted (RFC 5322's SHOULD)."""

_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
"""A field name: printable ASCII but the colon (what the ``email`` parser accepts)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""C0 and C1 controls, DEL, and lone surrogates."""
_EW_START = "=?utf-8?b?"
_EW_END = "?="
_EW_OVERHEAD = len(_EW_START) + len(_EW_END)
_MIN_EW_ROOM = 8
"""Base64 characters an encoded word needs to carry any character (4 UTF-8 bytes)."""
_LONGEST_WORD = LINE - 1
"""A word longer than a line (after its space) is encoded, so that it can be split."""
_BEFORE_BLANKS = re.compile(r"(?<![ \t])(?=[ \t]+[^ \t])")
"""Where a line may break in a value that is kept as it is: before a run of blanks
that follows a visible character and is followed by one."""


@dataclass(frozen=True, slots=True)
class Section:
    """The header section of a message as received."""

    fields: list[tuple[str, str]]
    """(name, value) as the ``email`` parser stores them: the value after the colon
    and its leading blanks, continuation lines kept with their CRLF, 8-bit bytes as
    surrogate escapes."""
    body: int
    """Where the body starts, after the empty line that ends the section."""


def crlf_only(data: bytes) -> bool:
    """Whether every line of ``data`` ends in CRLF: no bare CR, no bare LF.

    The ``email`` package reads a bare CR or LF as a line end and writes CRLF;
    bytes passed through unchanged must not depend on that."""
    pairs = data.count(b"\r\n")
    return data.count(b"\n") == pairs and data.count(b"\r") == pairs


def split(raw: bytes) -> Section | None:
    """The header section of ``raw`` and where its body starts; None for anything
    the ``email`` parser would read with a defect (a line that is neither a field
    nor a continuation, a continuation first, a section that never ends, a bare
    CR or LF) or read its own way (a Unix ``From `` line)."""
    if raw.startswith(b"\r\n"):
        return Section([], 2)
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    fields: list[tuple[str, str]] = []
    for line in raw[:end].decode("ascii", "surrogateescape").split("\r\n"):
        if "\r" in line or "\n" in line:
            return None
        if line[:1] in (" ", "\t"):
            if not fields:
                return None
            name, value = fields[-1]
            fields[-1] = (name, f"{value}\r\n{line}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _NAME.fullmatch(name):
            return None
        fields.append((name, value.lstrip(" \t")))
    return Section(fields, end + 4)


def text_field(name: str, text: str, *, utf8: bool) -> bytes:
    """An unstructured header (RFC 5322 §3.2.5), folded; runs of white space in
    ``text`` are written as one space (the values the relay writes are single-spaced).

    Words that are not printable ASCII (with ``utf8``: that hold a control
    character), that hold
    ``=?`` (a client would try to decode them) or that are longer than a line are
    written as encoded words.  Adjacent such words share their encoded words: the
    space between two encoded words is not shown (RFC 2047 §6.2), so it is encoded
    with them."""
    lines = [f"{name}:"]
    run: list[str] = []
    for word in text.split():
        if _needs_encoding(word, utf8):
            run.append(word)
            continue
        if run:
            _put_encoded(lines, " ".join(run))
            run = []
        _put(lines, word)
    if run:
        _put_encoded(lines, " ".join(run))
    return _join(lines, utf8)


def address_field(name: str, display_name: str, address: str, *, utf8: bool) -> bytes:
    """A header with one mailbox, ``display_name <address>``, folded.  The display
    name is quoted as it needs (the ``email`` package's ``Address``), or, if it is
    not ASCII (with ``utf8``: if it holds a control character), written as
    encoded words that end at
    its spaces where they can: readers differ on the space between two encoded
    words in a phrase, but not on one inside them.  The display name is expected
    single-spaced (``relay.core.names.display_name`` is)."""
    local, _, domain = address.rpartition("@")
    mailbox = Address(display_name=display_name, username=local, domain=domain)
    lines = [f"{name}:"]
    if "=?" in display_name or not all(_printable(w, utf8) for w in display_name.split(" ")):
        _put_encoded(lines, display_name, at_spaces=True)
        _put(lines, f"<{mailbox.addr_spec}>")
    else:
        for word in str(mailbox).split(" "):
            _put(lines, word)
    return _join(lines, utf8)


def raw_field(name: str, value: str) -> bytes:
    """A header whose (ASCII, unfolded) value is written exactly as it is: lines
    break only before blanks that are already there, which unfolding takes back
    out (RFC 5322 §2.2.3).  For MIME headers, whose parameters may hold blanks
    that matter."""
    pieces = _BEFORE_BLANKS.split(value)
    lines = [f"{name}: {pieces[0]}"]
    for piece in pieces[1:]:
        if len(lines[-1]) + len(piece) > LINE:
            lines.append(piece)
        else:
            lines[-1] += piece
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _needs_encoding(word: str, utf8: bool) -> bool:
    too_long = len(word.encode("utf-8", "replace")) > _LONGEST_WORD
    return too_long or "=?" in word or not _printable(word, utf8)


def _printable(word: str, utf8: bool) -> bool:
    """Whether ``word`` can be written as it is: printable ASCII, or with ``utf8``
    anything but control characters (and lone surrogates, which are no text)."""
    if not utf8:
        return word.isascii() and word.isprintable()
    return _CONTROL.search(word) is None


def _put(lines: list[str], word: str) -> None:
    """Add ``word`` after a space, on a new line if it does not fit on this one
    (the first word always goes on the first line, after the field name)."""
    if _started(lines) and len(lines[-1]) + 1 + len(word) > LINE:
        lines.append("")
    lines[-1] += f" {word}"


def _started(lines: list[str]) -> bool:
    """Whether a word was written after the field name (names hold no space)."""
    return len(lines) > 1 or " " in lines[0]


def _put_encoded(lines: list[str], text: str, *, at_spaces: bool = False) -> None:
    """Add ``text`` as UTF-8 base64 encoded words, as many per line as fit; a word
    never splits a character (RFC 2047 §5), and with ``at_spaces`` it ends after a
    space of ``text``, on a new line if need be, unless a word is longer than a
    line holds."""
    data = text.encode("utf-8", "replace")
    while data:
        room = LINE - len(lines[-1]) - 1 - _EW_OVERHEAD
        if room < _MIN_EW_ROOM and _started(lines):
            lines.append("")
            continue
        cut = min(len(data), max(room, _MIN_EW_ROOM) // 4 * 3)
        while cut < len(data) and data[cut] & 0xC0 == 0x80:  # inside a character
            cut -= 1
        if at_spaces and cut < len(data):
            space = data.rfind(b" ", 0, cut)
            if space < 0 and lines[-1] and _started(lines):
                lines.append("")  # the next word may fit whole on a line of its own
                continue
            cut = space + 1 or cut
        chunk, data = data[:cut], data[cut:]
        lines[-1] += f" {_EW_START}{base64.b64encode(chunk).decode('ascii')}{_EW_END}"


def _join(lines: list[str], utf8: bool) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("utf-8" if utf8 else "ascii")
