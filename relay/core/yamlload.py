"""YAML loading that keeps line numbers, so that every configuration error can
name the file, the line and the problem (README, "Configuration").

PyYAML's ``safe_load`` forgets where values came from; ``compose`` keeps the node
tree with its marks.  We compose the document once, check it for what PyYAML lets
through silently (a key given twice: the last one would win unnoticed; aliases
that expand to millions of elements), build the data from that same tree, and
walk the tree to find the line of a pydantic error location.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

MAX_NODES = 1_000_000
"""Elements a document may hold once its aliases are expanded ("billion laughs")."""


class StrictModel(BaseModel):
    """A mapping of a YAML file: unknown keys are refused (a misspelt key would
    otherwise be ignored and its default used in silence), values are frozen, and
    an empty section (``smtp:`` with every setting commented out, which YAML reads
    as null) means "all defaults"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: Any) -> Any:
        return {} if data is None else data


class ConfigError(Exception):
    """A configuration file that cannot be used; ``str()`` is the user-facing text.

    ``problems`` holds one line per problem, each ``file:line: where: what``.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Read ``path`` and return (data, node tree).

    Raises ConfigError for a missing or unreadable file, bytes that are not UTF-8,
    invalid YAML, a key given twice in one mapping, or an alias bomb.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded)"]
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_tree(path, node)
        data = yaml.SafeLoader("").construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_describe_yaml_error(path, exc)]) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError(
            [f"{path}:{line}: invalid YAML: character {char}: {exc.reason}"]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: invalid YAML: nested too deeply"]) from None
    return data, node


def _describe_yaml_error(path: Path, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        where = exc.context
        if exc.context_mark is not None and exc.context_mark.line != (
            exc.problem_mark.line if exc.problem_mark else None
        ):
            where += f" started at line {exc.context_mark.line + 1}"
        problem = f"{problem} ({where})"
    return f"{path}{line}: invalid YAML: {problem}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_tree(path: Path, root: yaml.Node | None) -> None:
    """Refuse duplicate keys, recursive aliases and alias bombs.

    Iterative, so a deep document cannot exhaust the stack here.
    """
    if root is None:
        return
    problems: list[str] = []
    size: dict[int, int] = {}
    """Elements under a node once aliases are expanded; set when the node is done."""
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            open_nodes.discard(id(node))
            total = 1 + sum(size[id(child)] for child in _children(node))
            if total > MAX_NODES:
                line = node.start_mark.line + 1
                raise ConfigError(
                    [f"{path}:{line}: invalid YAML: aliases expand to more than {MAX_NODES} items"]
                )
            size[id(node)] = total
            continue
        if id(node) in size:
            continue  # an alias of a node already checked
        if id(node) in open_nodes:
            line = node.start_mark.line + 1
            raise ConfigError([f"{path}:{line}: invalid YAML: an alias refers to itself"])
        open_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, _value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        problems.append(
                            f"{path}:{line}: duplicate key {key.value!r}"
                            f" (already given at line {first[key.value]})"
                        )
                    else:
                        first[key.value] = line
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(_children(node)))
    if problems:
        raise ConfigError(problems)


def line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the setting at ``loc`` (a pydantic error location).

    A setting found in a mapping is reported at the line of its key (for a block
    value, the value starts on a later line, but the key is what names it).  Walks
    as far down the location as the document goes: an error about a missing key
    points at the mapping that lacks it.
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
            line = child.start_mark.line + 1
        if child is None:
            return line
        node = child
    return line


_MESSAGES = {
    "extra_forbidden": "unknown setting",
    "missing": "required setting is missing",
    "model_type": "must be a mapping of settings",
    "model_attributes_type": "must be a mapping of settings",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "path_type": "must be a file path (a string)",
    "invalid_key": "keys must be strings",
}


def describe_validation_error(
    path: Path, node: yaml.Node | None, error: ValidationError, *, prefix: Sequence[int | str] = ()
) -> list[str]:
    """Turn a pydantic error into ``file:line: dotted.location: message`` lines.

    ``prefix`` is where in the document the validated value sits, when it is not
    the whole document (one rule of a rules file, say).
    """
    problems = []
    for item in error.errors():
        loc = [*prefix, *(part for part in item["loc"] if not _is_internal(part))]
        line = line_of(node, loc)
        at = f"{path}:{line}" if line is not None else str(path)
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ")
        if item["type"] in ("enum", "literal_error"):
            message = f"{message} (got {item['input']!r})"
        problem = f"{at}: {dotted(loc)}: {message}"
        if problem not in problems:
            problems.append(problem)
    return problems


def dotted(loc: Sequence[int | str]) -> str:
    """``["rules", 2, "match"]`` → ``rules[2].match``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def _is_internal(part: int | str) -> bool:
    # pydantic adds the tag of a union member ("function-after[...]") to locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))
