"""Loads ``filters.yaml`` into a RuleSet; refuses a bad file with file, line and problem.

Every problem in the file is reported at once (``relay check-config`` prints
them all), each as ``file:line: rules[i].setting: problem``.  A rule naming a
kind nobody registered is an error, so a typo never silently disables a rule,
and so is an action its match kind cannot carry out (``redact`` needs text to
replace, ``strip`` a part or an HTML element to remove).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from relay.core.yamlload import (
    ConfigError,
    StrictModel,
    describe_validation_error,
    line_of,
    read_yaml,
)
from relay.filters.base import Action, HtmlStripping, Redacting, Role, Rule, RuleSet
from relay.filters.registry import MatcherFactory, find_factory, known_kinds


class RuleSpec(StrictModel):
    id: Annotated[str, Field(min_length=1)]
    description: str = ""
    applies_to: Literal["seller", "buyer", "both"] = "seller"
    match: dict[str, Any]
    action: Literal["reject", "quarantine", "strip", "redact", "flag"]
    notice: str = ""


class RulesFile(StrictModel):
    redact_marker: Annotated[str, Field(min_length=1)] = "[redacted]"
    """What replaces matched text under ``action: redact``."""
    rules: list[Any] | None = None
    """Each item is validated as a RuleSpec on its own, so every bad rule is reported."""


def load_rules(path: Path, *, matchers: Mapping[str, MatcherFactory] | None = None) -> RuleSet:
    """Raises ConfigError listing every problem in the file.

    ``matchers`` replaces the registry (the relay's kinds and the plugins) when given.
    """
    data, node = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise ConfigError([f"{path}:{line}: the rules file must be a mapping with a 'rules' list"])
    try:
        spec = RulesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, node, exc)) from None
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, int | None] = {}
    for i, raw in enumerate(spec.rules or []):
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(rule_id, str) and rule_id in seen:
            problems.append(
                f"{path}:{line_of(node, ['rules', i, 'id'])}: rules[{i}].id: duplicate rule id"
                f" {rule_id!r} (first used at line {seen[rule_id]})"
            )
        elif isinstance(rule_id, str):
            seen[rule_id] = line_of(node, ["rules", i, "id"])
        try:
            item = RuleSpec.model_validate(raw)
        except ValidationError as exc:
            problems.extend(describe_validation_error(path, node, exc, prefix=["rules", i]))
            continue
        if len(item.match) != 1:
            problems.append(
                f"{path}:{line_of(node, ['rules', i, 'match'])}: rules[{i}].match:"
                f" give exactly one match kind (got {len(item.match)})"
            )
            continue
        ((kind, value),) = item.match.items()
        at = f"{path}:{line_of(node, ['rules', i, 'match', kind])}"
        try:
            factory = find_factory(kind) if matchers is None else matchers.get(kind)
        except Exception as exc:
            problems.append(
                f"{at}: rules[{i}].match: match kind {kind!r} could not be loaded:"
                f" {type(exc).__name__}: {exc}"
            )
            continue
        if factory is None:
            known = ", ".join(known_kinds() if matchers is None else sorted(matchers))
            problems.append(
                f"{at}: rules[{i}].match: unknown match kind {kind!r}"
                f" (known: {known or 'none registered'})"
            )
            continue
        try:
            matcher = factory(value)
        except ValidationError as exc:
            problems.extend(
                describe_validation_error(path, node, exc, prefix=["rules", i, "match", kind])
            )
            continue
        except (ValueError, TypeError) as exc:
            problems.append(f"{at}: rules[{i}].match.{kind}: {exc}")
            continue
        except Exception as exc:
            # A plugin's own error type (re.error, say) is still a problem with this rule.
            problems.append(f"{at}: rules[{i}].match.{kind}: {type(exc).__name__}: {exc}")
            continue
        action = Action[item.action.upper()]
        unable = _unable(matcher, action, kind)
        if unable:
            problems.append(
                f"{path}:{line_of(node, ['rules', i, 'action'])}: rules[{i}].action: {unable}"
            )
            continue
        roles = frozenset(Role) if item.applies_to == "both" else frozenset({Role(item.applies_to)})
        rules.append(
            Rule(
                id=item.id,
                description=item.description,
                applies_to=roles,
                matcher=matcher,
                action=action,
                notice=item.notice,
            )
        )
    if problems:
        raise ConfigError(problems)
    return RuleSet(tuple(rules), source=str(path), redact_marker=spec.redact_marker)


def _unable(matcher: object, action: Action, kind: str) -> str:
    """Why ``matcher`` cannot carry out ``action``, or ""."""
    if action is Action.REDACT and not isinstance(matcher, Redacting):
        return f"match kind {kind!r} finds no text to redact: use reject, quarantine, strip or flag"
    finds_parts = getattr(matcher, "finds_parts", False) is True
    if action is Action.STRIP and not finds_parts and not isinstance(matcher, HtmlStripping):
        return (
            f"match kind {kind!r} finds no part to strip (strip removes attachments and"
            " linked images): use reject, quarantine, redact or flag"
        )
    return ""
