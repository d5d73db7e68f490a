"""Loads ``filters.yaml`` into a RuleSet; refuses a bad file with file, line and problem.

Match kinds come from a registry: ``MATCHERS``, filled by the relay's own match
modules, and the ``relay.matchers`` entry-point group, through which a plugin adds
a kind without editing the relay (SPEC §5).  A rule naming a kind nobody
registered is an error, so a typo never silently disables a rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from relay.filters.base import Action, Matcher, Role, Rule, RuleSet
from relay.yamlload import ConfigError, describe_validation_error, line_of, read_yaml

MatcherFactory = Callable[[Any], Matcher]
MATCHERS: dict[str, MatcherFactory] = {}
"""Match kind → factory taking the rule's ``match`` value. Filled by the match modules."""

ENTRY_POINT_GROUP = "relay.matchers"
"""Plugins: an entry point named after the match kind, pointing at its factory."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        # ``rules:`` with every rule commented out is YAML null: no rules.
        return {} if data is None else data


class RuleSpec(_Strict):
    id: Annotated[str, Field(min_length=1)]
    description: str = ""
    applies_to: Literal["seller", "buyer", "both"] = "seller"
    match: dict[str, Any]
    action: Literal["reject", "quarantine", "strip", "redact", "flag"]
    notice: str = ""


class RulesFile(_Strict):
    rules: list[Any] | None = None
    """Each item is validated as a RuleSpec on its own, so every bad rule is reported."""


def _plugin_kinds() -> set[str]:
    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _find_factory(
    kind: str, registry: Mapping[str, MatcherFactory], plugins: bool
) -> MatcherFactory | None:
    """The factory for ``kind``; raises whatever a broken plugin raises on import."""
    factory = registry.get(kind)
    if factory is not None or not plugins:
        return factory
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        loaded: MatcherFactory = ep.load()
        return loaded
    return None


def load_rules(path: Path, *, matchers: Mapping[str, MatcherFactory] | None = None) -> RuleSet:
    """Raises ConfigError listing every problem in the file.

    ``matchers`` replaces the registry (``MATCHERS`` and the plugins) when given.
    """
    registry = MATCHERS if matchers is None else matchers
    plugins = matchers is None
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
            factory = _find_factory(kind, registry, plugins)
        except Exception as exc:
            problems.append(
                f"{at}: rules[{i}].match: match kind {kind!r} could not be loaded:"
                f" {type(exc).__name__}: {exc}"
            )
            continue
        if factory is None:
            known = ", ".join(sorted(set(registry) | (_plugin_kinds() if plugins else set())))
            problems.append(
                f"{at}: rules[{i}].match: unknown match kind {kind!r}"
                f" (known: {known or 'none registered'})"
            )
            continue
        try:
            matcher = factory(value)
        except (ValueError, TypeError) as exc:
            problems.append(f"{at}: rules[{i}].match.{kind}: {exc}")
            continue
        except Exception as exc:
            # A plugin's own error type (re.error, say) is still a problem with this rule.
            problems.append(f"{at}: rules[{i}].match.{kind}: {type(exc).__name__}: {exc}")
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
