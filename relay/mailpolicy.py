"""The ``email`` policies the relay parses and writes with: the standard ones, with
a header factory that remembers what it parsed.

With ``email.policy.default`` every ``msg["Content-Type"]``, every
``get_content_type()`` and every header set parses the value afresh into a
structured header object (a parse tree, then defects, then parameters).
Rewriting a message asks for the same few values again and again, and under
load that re-parsing was the largest single cost of the relay.  Header objects
are immutable once made, so one made for a (name, value) pair can be handed
out again; the cache is bounded.
"""

from __future__ import annotations

import email.policy
from email.headerregistry import BaseHeader, HeaderRegistry
from functools import lru_cache
from typing import Any


class CachedHeaderRegistry(HeaderRegistry):
    """A ``HeaderRegistry`` whose results for one (name, value) are made once."""

    def __init__(self, maxsize: int = 4096) -> None:
        super().__init__()
        self._make = lru_cache(maxsize=maxsize)(super().__call__)

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if not isinstance(value, str) or type(value) is not str:
            return super().__call__(name, value)  # not hashable by value, or a subclass
        header: BaseHeader = self._make(name, value)
        return header


DEFAULT = email.policy.default.clone(header_factory=CachedHeaderRegistry())
"""``email.policy.default``, cached: how the relay parses messages."""
SMTP = DEFAULT.clone(linesep="\r\n")
"""``email.policy.SMTP``, cached: how it writes them for delivery."""
SMTPUTF8 = SMTP.clone(utf8=True)
"""``email.policy.SMTPUTF8``, cached: for a recipient with a non-ASCII address."""
