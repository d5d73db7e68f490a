"""YAML loading that keeps line numbers, so that every configuration error can
name the file, the line and the problem (SPEC §7).

PyYAML's ``safe_load`` forgets where values came from; ``compose`` keeps the node
tree with its marks.  We load the data with ``safe_load`` for the values and walk
the composed tree to find the line of a pydantic error location.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(Exception):
    """A configuration file that cannot be used; ``str()`` is the user-facing text.

    ``problems`` holds one line per problem, each ``file:line: where: what``.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Read ``path`` and return (data, node tree).

    Raises ConfigError for a missing file, unreadable bytes or invalid YAML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([f"{path}{line}: invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    return data, node


def line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the value at ``loc`` (a pydantic error location).

    Walks as far down the location as the document goes: an error about a
    missing key points at the mapping that lacks it.
    """
    if node is None:
        return None
    line = node.start_mark.line + 1
    for step in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(step):
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(step, int)
            and 0 <= step < len(node.value)
        ):
            child = node.value[step]
        if child is None:
            return line
        node = child
        line = node.start_mark.line + 1
    return line


def describe_validation_error(
    path: Path, node: yaml.Node | None, error: ValidationError, *, prefix: Sequence[str] = ()
) -> list[str]:
    """Turn a pydantic error into ``file:line: dotted.location: message`` lines."""
    problems = []
    for item in error.errors():
        loc = [part for part in item["loc"] if not _is_internal(part)]
        where = ".".join(str(p) for p in (*prefix, *loc)) or "(top level)"
        line = line_of(node, loc)
        at = f"{path}:{line}" if line is not None else str(path)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        problems.append(f"{at}: {where}: {message}")
    return problems


def _is_internal(part: int | str) -> bool:
    # pydantic adds the tag of a union member ("function-after[...]") to locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))
