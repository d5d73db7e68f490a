"""The ``relay`` command is a package of one module per subject, each registering
its commands on ``relay.cli.base.main`` when ``relay.cli`` imports it: a module
that ``relay.cli`` forgot to import would take its commands out of the command
without any error, and a subject module importing another would bring back the
circle the split ended."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from relay.cli import main

README_COMMANDS = {
    "serve",
    "reload",
    "status",
    "check-config",
    "seller",
    "order",
    "buyer",
    "conversation",
    "archive",
    "quarantine",
    "queue",
    "responses",
    "dkim",
    "tls",
    "brand",
    "follower",
    "product",
    "promotion",
    "event",
    "campaign",
}
"""The commands the README's "Command line" documents."""

CLI = Path(__file__).resolve().parent.parent / "relay" / "cli"


def listed_commands(help_text: str) -> list[str]:
    """The names in the ``Commands:`` section of a group's help (a wrapped help
    text continues on lines indented further than the names)."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return re.findall(r"^  (\S+)", section, flags=re.MULTILINE)


def test_python_m_relay_cli_help_lists_every_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    listed = listed_commands(proc.stdout)
    assert listed == sorted(main.commands), proc.stdout
    assert set(listed) >= README_COMMANDS, README_COMMANDS - set(listed)


def cli_imports(path: Path) -> set[str]:
    """The ``relay.cli`` modules a module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "relay.cli":
                found.update(f"relay.cli.{a.name}" for a in node.names)
            elif node.module.startswith("relay.cli."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("relay.cli"))
    return found


def test_subject_modules_import_only_base() -> None:
    subjects = sorted(p for p in CLI.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(subjects) > 1
    for path in subjects:
        allowed = set() if path.stem == "base" else {"relay.cli.base"}
        assert cli_imports(path) <= allowed, path.name
    imported = cli_imports(CLI / "__init__.py")
    assert imported == {f"relay.cli.{p.stem}" for p in subjects}
