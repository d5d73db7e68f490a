"""Replacing matched spans of text by a marker: what ``redact`` does to a text."""

from __future__ import annotations

from collections.abc import Iterable


def replace_spans(text: str, spans: Iterable[tuple[int, int]], marker: str) -> str:
    """``text`` with each span cut out and ``marker`` put where it began.

    Spans may reach outside ``text`` (a match running across HTML text nodes, in
    the node's own offsets): a part outside is ignored, and one that began before
    ``text`` (``start < 0``) is cut without a marker, since the marker went where
    the match began.
    """
    out: list[str] = []
    pos = 0
    for start, end in sorted(spans):
        end = min(end, len(text))
        if end <= pos or start >= len(text):
            continue
        out.append(text[pos : max(start, pos)])
        if start >= 0:
            out.append(marker)
        pos = end
    out.append(text[pos:])
    return "".join(out)
