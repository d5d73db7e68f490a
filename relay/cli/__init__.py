"""The ``relay`` command."""

from relay.cli.commands import main

__all__ = ["main"]
