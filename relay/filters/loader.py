"""Loads ``filters.yaml`` into a RuleSet; refuses a bad file with file, line and problem.

Match kinds come from a registry (``MATCHERS``); a rule naming a kind nobody
registered is an error, so a typo never silently disables a rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.filters.base import Action, Matcher, Role, Rule, RuleSet
from relay.yamlload import ConfigError, describe_validation_error, line_of, read_yaml

MatcherFactory = Callable[[Any], Matcher]
MATCHERS: dict[str, MatcherFactory] = {}
"""Match kind → factory taking the rule's ``match`` value. Filled by the match modules."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Strict):
    id: Annotated[str, Field(min_length=1)]
    description: str = ""
    applies_to: Literal["seller", "buyer", "both"] = "seller"
    match: dict[str, Any]
    action: Literal["reject", "quarantine", "strip", "redact", "flag"]
    notice: str = ""


class RulesFile(_Strict):
    rules: list[RuleSpec] = []


def load_rules(path: Path, *, matchers: Mapping[str, MatcherFactory] | None = None) -> RuleSet:
    """Raises ConfigError listing every problem in the file."""
    registry = MATCHERS if matchers is None else matchers
    data, node = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the rules file must be a mapping with a 'rules' list"])
    try:
        spec = RulesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, node, exc)) from None
    problems: list[str] = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, item in enumerate(spec.rules):
        where = f"{path}:{line_of(node, ['rules', i])}"
        if item.id in seen:
            problems.append(f"{where}: rules[{i}].id: duplicate rule id {item.id!r}")
        seen.add(item.id)
        if len(item.match) != 1:
            problems.append(f"{where}: rules[{i}].match: give exactly one match kind")
            continue
        ((kind, value),) = item.match.items()
        factory = registry.get(kind)
        if factory is None:
            known = ", ".join(sorted(registry)) or "none registered"
            problems.append(
                f"{path}:{line_of(node, ['rules', i, 'match', kind])}: "
                f"rules[{i}].match: unknown match kind {kind!r} (known: {known})"
            )
            continue
        try:
            matcher = factory(value)
        except (ValueError, TypeError) as exc:
            problems.append(
                f"{path}:{line_of(node, ['rules', i, 'match', kind])}: "
                f"rules[{i}].match.{kind}: {exc}"
            )
            continue
        roles = frozenset(Role) if item.applies_to == "both" else frozenset({Role(item.applies_to)})
        rules.append(
            Rule(
                id=item.id,
                description=item.description,
                applies_to=roles,
                matcher=matcher,
                action=Action[item.action.upper()],
                notice=item.notice,
            )
        )
    if problems:
        raise ConfigError(problems)
    return RuleSet(tuple(rules), source=str(path))
