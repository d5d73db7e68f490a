"""The ``relay`` command (README, "Command line"): one module per subject.

``base`` holds what every subcommand shares: the group ``main``, the context
object, the option types, JSON or text output and the error handling.  Each
subject module imports ``base`` (and the relay packages it needs), never
another subject module, and registers its commands on ``main`` when imported:

- ``serve``: ``serve``, ``reload``, ``status``, ``check-config``;
- ``directory``: ``seller``, ``order``, ``buyer``;
- ``conversations``: ``conversation``, ``responses``;
- ``archive``: ``archive``, ``quarantine``, ``queue``;
- ``keys``: ``dkim``, ``tls``;
- ``catalog``: ``brand``, ``follower``, ``product``;
- ``promotions``: ``promotion``, ``event``;
- ``campaign``: ``campaign``;
- ``api``: ``api-key``, ``api``;
- ``console``: ``console user``.

This package imports them all, so that ``relay.cli.main`` (the entry point of
the ``relay`` script, and of ``python -m relay.cli``) has every command.

May import: every relay package (it is the top, with relay.app and relay.supervisor).
"""

from relay.cli import (  # noqa: F401  (imported for their commands)
    api,
    archive,
    campaign,
    catalog,
    console,
    conversations,
    directory,
    keys,
    promotions,
    serve,
)
from relay.cli.base import main

__all__ = ["main"]
