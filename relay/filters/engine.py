"""Runs a rule set over one message: every rule, in file order, every hit kept."""

from __future__ import annotations

from relay.filters.base import FilterInput, Hit, RuleSet, Verdict


def evaluate(rules: RuleSet, item: FilterInput) -> Verdict:
    """Pure CPU work: callers run it in a worker thread, never on the event loop."""
    hits: list[Hit] = []
    for rule in rules.rules:
        if item.role not in rule.applies_to:
            continue
        for detail in rule.matcher.find(item):
            hits.append(Hit(rule.id, rule.action, detail, rule.notice))
    return Verdict(tuple(hits))
