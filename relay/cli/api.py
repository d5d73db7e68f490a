"""The HTTP API from the command line: ``relay api-key`` and ``relay api``."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

import click

from relay.api import keys
from relay.api.scopes import Scope, ScopeError
from relay.cli.base import ID, NAME, CliError, Context, common, emit, handled, main, pass_ctx, write
from relay.core import logs

if TYPE_CHECKING:
    _ScopeBase = click.ParamType[Scope]
else:  # older click releases have no generic ParamType
    _ScopeBase = click.ParamType


class ScopeType(_ScopeBase):
    name = "SCOPE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Scope:
        if isinstance(value, Scope):
            return value
        try:
            return Scope.parse(str(value))
        except ScopeError as exc:
            self.fail(str(exc), param, ctx)


@main.group("api-key")
@common
def api_key() -> None:
    """Keys of the HTTP API (shown once when made; only their hashes are kept)."""


@api_key.command("create")
@common
@click.option(
    "--scope",
    type=ScopeType(),
    required=True,
    help="admin (everything), seller:ID (that seller's) or brand:ID (that brand's).",
)
@click.option("--name", type=NAME, default="", help="What the key is for.")
@pass_ctx
@handled
def api_key_create(ctx: Context, scope: Scope, name: str) -> None:
    """Make a key; it is printed this once."""
    new = write(ctx, keys.create, scope=scope, name=name)
    emit(
        ctx,
        {"id": new.id, "key": new.key, "scope": str(new.scope)},
        [f"key {new.id} ({new.scope}): {new.key}", "it is shown this once: keep it now"],
    )


@api_key.command("list")
@common
@pass_ctx
@handled
def api_key_list(ctx: Context) -> None:
    """Every key: id, scope, name, when made and when revoked (never the key)."""
    rows = write(ctx, keys.listed)
    data = [
        {
            "id": k.id,
            "scope": k.scope,
            "name": k.name,
            "created_at": k.created_at.isoformat(),
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        }
        for k in rows
    ]
    lines = [
        f"{k.id:>4}  {k.scope:<16} {'revoked' if k.revoked_at else 'active ':<8} {k.name}"
        for k in rows
    ]
    emit(ctx, data, lines or ["no API keys"])


@api_key.command("revoke")
@common
@click.argument("key_id", type=ID)
@pass_ctx
@handled
def api_key_revoke(ctx: Context, key_id: int) -> None:
    """Revoke a key: the next request with it is refused (401)."""
    info = write(ctx, keys.revoke, key_id)
    emit(ctx, {"id": info.id, "revoked": True}, [f"key {info.id} ({info.scope}) revoked"])


@main.command("api")
@common
@pass_ctx
@handled
def api(ctx: Context) -> None:
    """Serve the HTTP API alone, on api.listen, until SIGTERM or Ctrl-C.

    `relay serve` serves it too; this is for running the API on hosts of its
    own, against the same database."""
    from relay.api.server import ApiServer

    config = ctx.config
    address = config.api.address
    if address is None:
        raise CliError("api.listen is null: the API is switched off in this configuration")
    logs.setup(config.logging, verbose=False, show_pid=False)
    db = ctx.database()
    try:
        server = ApiServer(config, db, *address)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}"
        ) from None
    stop = threading.Event()

    def stopping(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    server.start()
    stop.wait()
    server.stop()
    sys.exit(0)
