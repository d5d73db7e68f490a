"""Running the relay: ``relay serve``, ``reload``, ``status`` and ``check-config``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from relay.cli.base import CliError, Context, common, emit, handled, main, pass_ctx, plural
from relay.core import logs
from relay.core.config import RelayConfig
from relay.core.pidfile import running_pid
from relay.core.yamlload import ConfigError
from relay.delivery.dkim_sign import DkimError, rsa_txt_record
from relay.filters import load_rules
from relay.storage.db import Database


@main.command()
@common
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log at debug level, every SMTP command included. Warning: real addresses"
    " of buyers and sellers then reach the log (at info level only tokens do).",
)
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1, 64),
    metavar="N",
    default=None,
    help="Relay processes sharing the port, 1 to 64 (default: smtp.workers, 1).",
)
@pass_ctx
@handled
def serve(ctx: Context, verbose: bool, workers: int | None) -> None:
    """Run the SMTP server and the delivery workers until stopped.

    SIGTERM or Ctrl-C stops it cleanly; `relay reload` (SIGHUP) reloads the
    filter rules.  Its pid goes to smtp.pid_file while it runs, and a second
    `relay serve` with the same pid file is refused.
    """
    from relay import supervisor

    config = ctx.config
    count = workers or config.smtp.workers
    logs.setup(config.logging, verbose=verbose, show_pid=count > 1)
    sys.exit(supervisor.serve(config, count))


@main.command()
@common
@pass_ctx
@handled
def reload(ctx: Context) -> None:
    """Make the running `relay serve` reload its filter rules (as `kill -HUP` does).

    The rules file is checked first: with a problem in it, the problems are
    printed, nothing is signalled and the relay keeps its rules (exit 2).  The
    relay is found by its pid file (smtp.pid_file); under --workers N the
    supervisor passes the signal on to every worker.  Other settings take a
    restart.
    """
    import signal

    config = ctx.config
    pid = running_pid(config.smtp.pid_file)
    try:
        count = len(load_rules(config.filters.rules).rules)
    except ConfigError as exc:
        click.echo(
            f"{exc}\nnot reloaded: relay serve (pid {pid}) keeps its current rules", err=True
        )
        sys.exit(2)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise CliError(f"relay serve (pid {pid}) has just stopped") from None
    except PermissionError:
        raise CliError(
            f"not allowed to signal relay serve (pid {pid}): run this as the user it runs as"
        ) from None
    emit(
        ctx,
        {"pid": pid, "pid_file": str(config.smtp.pid_file), "rules": count},
        [f"sent SIGHUP to relay serve (pid {pid}): it reloads {plural(count, 'filter rule')}"],
    )


@main.command("status")
@common
@pass_ctx
@handled
def status(ctx: Context) -> None:
    """Is the database reachable, does the downstream take mail, how full is the
    queue: what /healthz says, from the command line.  Exit 1 when unhealthy."""
    from relay.ops.health import check
    from relay.ops.response_times import format_duration

    config = ctx.config
    db = Database(config.database)
    try:
        health = check(config, db)
    finally:
        db.dispose()
    data = health.as_dict()

    def line(name: str, c: Any) -> str:
        return f"{name}: {'ok' if c.ok else 'FAIL'} ({c.detail})"

    age = health.queue_oldest_age_seconds
    queue_line = (
        "queue: unknown (database unavailable)"
        if health.queue_depth is None
        else f"queue: {health.queue_depth} waiting"
        + (f", oldest {format_duration(age)} old" if age is not None else "")
    )
    emit(
        ctx,
        data,
        [line("database", health.database), line("downstream", health.downstream), queue_line],
    )
    if not health.ok:
        sys.exit(1)


@main.command("check-config")
@common
@pass_ctx
@handled
def check_config(ctx: Context) -> None:
    """Validate the configuration and the filter rules.

    Exit status 0 when both are usable, else 2 with every problem, one per line.
    """
    path = ctx.config_path
    try:
        config = ctx.config
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    problems: list[str] = []
    count = 0
    if config.filters.rules.exists():
        try:
            count = len(load_rules(config.filters.rules).rules)
        except ConfigError as exc:
            problems.extend(exc.problems)
    else:
        problems.append(f"{path}: filters.rules: {config.filters.rules} does not exist")
    problems.extend(_dkim_problems(path, config))
    if problems:
        click.echo("\n".join(problems), err=True)
        sys.exit(2)
    emit(
        ctx,
        {"config": str(path), "rules": count, "ok": True},
        [f"{path}: OK ({plural(count, 'filter rule')})"],
    )


def _dkim_problems(path: Path, config: RelayConfig) -> list[str]:
    """A key that exists must be usable; a missing RSA key is created by ``serve``."""
    dk = config.dkim
    if not dk.enabled:
        return []
    problems = []
    try:
        if dk.private_key.exists():
            rsa_txt_record(dk.private_key.read_bytes())
    except (OSError, DkimError) as exc:
        problems.append(f"{path}: dkim.private_key: {dk.private_key}: {exc}")
    if dk.ed25519_key is not None and not dk.ed25519_key.exists():
        problems.append(
            f"{path}: dkim.ed25519_key: {dk.ed25519_key} does not exist"
            " (relay dkim keygen --ed25519 writes it)"
        )
    return problems
