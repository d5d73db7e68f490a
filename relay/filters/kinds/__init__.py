"""The relay's own match kinds; importing this package registers them."""

from relay.filters.kinds import attachments, keywords, links, patterns

__all__ = ["attachments", "keywords", "links", "patterns"]
