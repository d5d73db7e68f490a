"""Reading an SMTP DATA body in large pieces instead of line by line.

aiosmtpd reads DATA one line at a time in Python (``readuntil(b"\\r\\n")`` per
line, then a per-line dot check): for a 200 KB message that loop is most of
the CPU the server spends on it, and it runs on the event loop.  Here the
stream is searched for the terminating ``CRLF . CRLF`` by
``StreamReader.readuntil`` (a C search over the buffered bytes), dot-stuffing is
undone with one ``replace`` over the whole body, and the line-length check is
one scan.  Bytes after the terminator (a pipelining client's next command) stay
in the reader.

The outcome is the same as aiosmtpd's: the body without the final ``.``, an
over-long line or an over-size body is reported only after the whole body has
been read (RFC 5321 §4.2.5 lets the server answer only then), and an over-size
body is not kept in memory while it is drained.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

TERMINATOR = b"\r\n.\r\n"
MAX_LINE = 1001
"""Longest line aiosmtpd accepts, CRLF included (RFC 5321 §4.5.3.1.6 says 1000)."""


class DataProblem(enum.Enum):
    TOO_LONG = "a line is too long"
    TOO_MUCH = "the message is too big"


@dataclass(frozen=True, slots=True)
class DataResult:
    content: bytes
    problem: DataProblem | None = None


def _partial_terminator(data: bytearray) -> bool:
    """Whether ``data`` ends with a proper prefix of the terminator: the rest of
    it may be the next bytes, so the next read is one line, not a search."""
    return (
        data.endswith(b"\r")
        or data.endswith(b"\r\n")
        or data.endswith(b"\r\n.")
        or data.endswith(b"\r\n.\r")
    )


def unstuff(body: bytes) -> bytes:
    """RFC 5321 §4.5.2: a line starting with a period loses that period."""
    if body.startswith(b"."):
        body = body[1:]
    return body.replace(b"\r\n.", b"\r\n")


def has_long_line(body: bytes) -> bool:
    """Whether a CRLF-ended line of ``body`` is longer than MAX_LINE (as aiosmtpd
    counts: bytes up to and including the CRLF).  A line with a bare LF inside
    is still one SMTP line, so it is measured between CRLFs."""
    return len(body) + 2 > MAX_LINE and max(map(len, body.split(b"\r\n"))) + 2 > MAX_LINE


async def read_data(reader: asyncio.StreamReader, *, max_size: int | None) -> DataResult:
    """Read one DATA body, up to and including ``CRLF . CRLF``."""
    # A virtual CRLF before the first line: a body that is just ".\r\n" is empty.
    data = bytearray(b"\r\n")
    size = 0
    too_much = False
    while not data.endswith(TERMINATOR):
        try:
            if _partial_terminator(data):
                piece = await reader.readuntil(b"\n")
            else:
                piece = await reader.readuntil(TERMINATOR)
        except asyncio.LimitOverrunError as exc:
            # Not found within the reader's limit: take what surely holds no
            # terminator's start and search the rest again.
            piece = await reader.readexactly(max(1, exc.consumed))
        size += len(piece)
        data += piece
        if max_size and size - 3 > max_size and not too_much:
            too_much = True
        if too_much:
            del data[: -len(TERMINATOR)]  # drain without keeping the body
    if too_much:
        return DataResult(b"", DataProblem.TOO_MUCH)
    body = bytes(data[2:-3])  # without the virtual CRLF and the ".\r\n"
    if has_long_line(body):
        return DataResult(b"", DataProblem.TOO_LONG)
    return DataResult(unstuff(body))
