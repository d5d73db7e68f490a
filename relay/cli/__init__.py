"""The ``relay`` command."""

from relay.cli.base import main

__all__ = ["main"]
