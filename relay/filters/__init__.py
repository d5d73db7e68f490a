"""Content and attachment filters (docs/filters.md).

A filter stage runs between token resolution and archiving.  Rules come from
``config/filters.yaml``; each has a matcher (which only *detects*) and an action
(which the admin chose).  The most severe action among the hits wins.
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
