"""The packages import one way: the map in the README is also a rule.

Each package of ``relay`` may import only the packages listed for it here (and
itself).  The graph is read from the source with ``ast``, every ``import`` and
``from ... import`` inside functions included, so that a lazy import cannot hide
a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parents[1] / "relay"

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "storage": {"core"},
    "message": {"core", "storage"},
    "filters": {"core", "message"},
    "delivery": {"core", "storage", "message"},
    "campaigns": {"core", "storage", "message", "delivery"},
    "pipeline": {"core", "storage", "message", "filters", "delivery"},
    "inbound": {"core", "storage", "message", "pipeline"},
    "ops": {"core", "storage", "delivery", "campaigns"},
    "webhooks": {"core", "storage", "delivery", "ops"},
    "api": {
        "core",
        "storage",
        "message",
        "filters",
        "delivery",
        "campaigns",
        "pipeline",
        "ops",
        "webhooks",
    },
    "console": {
        "core",
        "storage",
        "message",
        "filters",
        "delivery",
        "campaigns",
        "pipeline",
        "ops",
        "webhooks",
        "api",
    },
}
"""Lower layers first.  The top (``app``, ``supervisor``, ``cli``) may import all."""

TOP = {"app", "supervisor", "cli", "__init__", "__main__"}


def package_of(path: Path) -> str:
    rel = path.relative_to(RELAY)
    return rel.parts[0].removesuffix(".py")


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """The relay packages ``path`` imports, with the line of each import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "relay":
                names = [f"relay.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "relay" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def modules() -> list[Path]:
    return sorted(RELAY.rglob("*.py"))


def test_every_package_is_placed_in_a_layer() -> None:
    packages = {package_of(p) for p in modules()}
    assert packages - TOP == set(ALLOWED)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(RELAY)))
def test_imports_point_down(path: Path) -> None:
    own = package_of(path)
    if own in TOP:
        return
    wrong = sorted(
        f"line {line}: relay.{pkg}"
        for pkg, line in imported_packages(path)
        if pkg != own and pkg not in ALLOWED[own]
    )
    assert wrong == [], f"relay.{own} may import only {sorted(ALLOWED[own])}"


def test_the_layers_have_no_cycle() -> None:
    """The table itself is acyclic (a layer listed as allowed both ways would not be)."""
    order: list[str] = []
    pending = dict(ALLOWED)
    while pending:
        ready = [p for p, deps in pending.items() if deps <= set(order)]
        assert ready, f"a cycle among {sorted(pending)}"
        order += sorted(ready)
        for p in ready:
            del pending[p]
