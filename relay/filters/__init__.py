"""Content and attachment filters (docs/filters.md).

A filter stage runs between token resolution and archiving.  Rules come from
``config/filters.yaml``; each has a matcher (which only *detects*) and an action
(which the admin chose).  The most severe action among the hits wins.

- ``loader``, ``registry``: ``filters.yaml`` → typed rules; the match kinds,
  the relay's own and ``relay.filters`` plugins;
- ``view``, ``html``: the message as its reader sees it: texts, HTML links,
  attachments;
- ``kinds/``: keywords, regex and header patterns, links and linked images,
  attachments;
- ``normalize``, ``urls``, ``spans``: Unicode folding with offsets, URL finding
  (defanged forms too), replacing matched spans by the redaction marker;
- ``base``, ``engine``, ``actions``: rules, hits and verdicts; every rule on a
  copy → its verdict; strip and redact before delivery.

May import: ``relay.core``, ``relay.message``.
"""

from relay.filters.base import Action, Finding, Hit, Matcher, Role, Rule, RuleSet, Verdict
from relay.filters.engine import evaluate
from relay.filters.loader import load_rules
from relay.filters.view import MessageView

__all__ = [
    "Action",
    "Finding",
    "Hit",
    "Matcher",
    "MessageView",
    "Role",
    "Rule",
    "RuleSet",
    "Verdict",
    "evaluate",
    "load_rules",
]
