"""Match kinds by name: the relay's own, and plugins' through an entry-point group.

A third party adds a match kind without editing the relay by publishing an entry
point in the ``relay.filters`` group, named after the kind and pointing at a
factory: a callable taking the rule's ``match`` value (whatever YAML gave) and
returning an object with ``find(view)``.  See docs/filters.md.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from relay.filters.base import Matcher

MatcherFactory = Callable[[Any], Matcher]
MATCHERS: dict[str, MatcherFactory] = {}
"""Match kind → factory taking the rule's ``match`` value."""

ENTRY_POINT_GROUP = "relay.filters"

F = TypeVar("F", bound=MatcherFactory)


def register(kind: str) -> Callable[[F], F]:
    def decorate(factory: F) -> F:
        MATCHERS[kind] = factory
        return factory

    return decorate


def plugin_kinds() -> set[str]:
    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def find_factory(kind: str) -> MatcherFactory | None:
    """The factory for ``kind``; raises whatever a broken plugin raises on import."""
    import relay.filters.kinds  # noqa: F401  (registers the relay's own kinds)

    factory = MATCHERS.get(kind)
    if factory is not None:
        return factory
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        loaded: MatcherFactory = ep.load()
        return loaded
    return None


def known_kinds() -> list[str]:
    import relay.filters.kinds  # noqa: F401

    return sorted(set(MATCHERS) | plugin_kinds())
