"""Runs a rule set over one message: every rule, in file order, every hit kept."""

from __future__ import annotations

from email.message import EmailMessage

from relay.filters.base import Finding, Hit, Role, RuleSet, Verdict
from relay.filters.view import MessageView


def evaluate(rules: RuleSet, message: EmailMessage, role: Role) -> Verdict:
    """Pure CPU work: callers run it in a worker thread, never on the event loop."""
    view = MessageView(message, role)
    hits: list[Hit] = []
    for rule in rules.rules:
        if role not in rule.applies_to:
            continue
        seen: set[tuple[str, str]] = set()
        for found in rule.matcher.find(view):
            finding = found if isinstance(found, Finding) else Finding(str(found))
            key = (finding.detail, finding.where)
            if key in seen and finding.part is None:
                continue  # one keyword ten times in a body is one hit
            seen.add(key)
            hits.append(Hit(rule, finding))
    return Verdict(tuple(hits), redact_marker=rules.redact_marker)
