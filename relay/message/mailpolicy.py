"""The ``email`` policies the relay parses and writes with: the standard ones, with
a header factory that remembers what it parsed.

With ``email.policy.default`` every ``msg["Content-Type"]``, every
``get_content_type()`` and every header set parses the value afresh into a
structured header object (a parse tree, then defects, then parameters).
Rewriting a message asks for the same few values again and again, and under
load that re-parsing was the largest single cost of the relay.  Header objects
are immutable once made, so one made for a (name, value) pair can be handed
out again; the cache is bounded (1,024 headers, a few MB).
"""

from __future__ import annotations

import email.policy
from email.headerregistry import BaseHeader, HeaderRegistry
from functools import lru_cache
from typing import Any


class CachedHeaderRegistry(HeaderRegistry):
    """A ``HeaderRegistry`` whose results for one (name, value) are made once.

    The standard registry also creates a new class for every header it makes
    (``type("_" + cls.__name__, ...)`` in ``__getitem__``); here each header
    kind gets its class once, which is both faster and keeps the cache small."""

    def __init__(self, maxsize: int = 1024) -> None:
        super().__init__()
        self._classes: dict[type, type[BaseHeader]] = {}
        self._make = lru_cache(maxsize=maxsize)(super().__call__)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        # Keyed by the header's kind, not its name: names are the sender's to
        # choose, the kinds are the registry's dozen or so.
        kind = self.registry.get(name.lower(), self.default_class)
        cls = self._classes.get(kind)
        if cls is None:
            cls = self._classes[kind] = type("_" + kind.__name__, (kind, self.base_class), {})
        return cls

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
