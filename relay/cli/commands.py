"""The ``relay`` command (README, "Command line").

``-c/--config`` and ``--json`` are accepted before or after the subcommand.
Errors are one clear line on stderr and a non-zero exit status, never a
traceback: 2 for bad arguments or configuration, 1 for a request that cannot be
carried out.  Set ``RELAY_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from sqlmodel import Session

import relay.campaigns
from relay.core import addresses, logs, names
from relay.core.config import DEFAULT_CONFIG, RelayConfig, check_selector, config_path, load_config
from relay.core.pidfile import PidFileError, running_pid
from relay.core.yamlload import ConfigError
from relay.delivery import spool
from relay.delivery.dkim_sign import (
    DkimError,
    ed25519_selector,
    generate_ed25519_key,
    generate_rsa_key,
    rsa_txt_record,
    txt_record_name,
)
from relay.filters import load_rules
from relay.storage import archive as archive_mod
from relay.storage import directory
from relay.storage.archive import Archive, ArchiveError
from relay.storage.db import Database, StorageUnavailable
from relay.storage.models import Conversation, DeliveryStatus, MessageStatus

F = TypeVar("F", bound=Callable[..., Any])


if TYPE_CHECKING:
    _TextBase = click.ParamType[str]
    _BaseInt = click.ParamType[int]
else:  # older click releases have no generic ParamType
    _TextBase = click.ParamType
    _BaseInt = click.ParamType


class Text(_TextBase):
    """A string that must be valid Unicode: argv bytes that are not UTF-8 arrive as
    lone surrogates, which nothing downstream (SQLite, JSON, the terminal) accepts."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(f"{text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8", param, ctx)
        if "\x00" in text:
            self.fail("must not contain NUL characters", param, ctx)
        return text


TEXT = Text()


class Name(Text):
    """A name the relay will write into headers (``relay.core.names``): one that would
    break a header is a bad argument (exit 2), refused before anything is stored.
    A blank one passes, for the command to say what it needs."""

    name = "text"

    def __init__(self, *, max_length: int = names.MAX_NAME, address_ok: bool = False) -> None:
        self.max_length = max_length
        self.address_ok = address_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        problem = names.problem(text, max_length=self.max_length, address_ok=self.address_ok)
        if text.strip() and problem is not None:
            self.fail(problem, param, ctx)
        return text


NAME = Name()


class Email(Text):
    """An email address, checked as the directory checks it: a malformed one is a
    bad argument (exit 2, with the usage), not a request that failed."""

    name = "email"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        try:
            addresses.normalize(text)
        except addresses.InvalidAddress as exc:
            self.fail(str(exc), param, ctx)
        return text

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str | None:
        return "EMAIL" if isinstance(param, click.Option) else None


EMAIL = Email()

MAX_ID = 2**63 - 1


class Id(_BaseInt):
    """Database ids: positive and within a 64-bit integer (SQLite and PostgreSQL
    bigint).  Shown as ``ID`` in the help, not as click's range of integers."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number: int = click.INT.convert(value, param, ctx)
        if not 1 <= number <= MAX_ID:
            self.fail(f"{number} is not in the range of ids (1 to {MAX_ID})", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str | None:
        return "ID" if isinstance(param, click.Option) else None


ID = Id()


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 attempt``, ``2 attempts``."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def shown(value: Any) -> str:
    """A value in text output: ``-`` when there is none, ``yes``/``no`` for flags."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class Context:
    def __init__(self) -> None:
        self.config_file: str | None = None
        self.json = False
        self._config: RelayConfig | None = None

    @property
    def config_path(self) -> Path:
        """Absolute, as every other path in the relay's messages is."""
        return config_path(self.config_file).absolute()

    @property
    def config(self) -> RelayConfig:
        if self._config is None:
            path = self.config_path
            try:
                self._config = load_config(path)
            except ConfigError as exc:
                if path == DEFAULT_CONFIG.absolute() and not path.exists():
                    exc.problems.append(
                        "(run relay from the project directory, or give -c PATH or RELAY_CONFIG)"
                    )
                raise ConfigError(exc.problems) from None
        return self._config

    def database(self) -> Database:
        """The database, closed when the command ends (its connections too, so that
        a command run in-process, as tests and scripts do, leaves none open).
        Migrated with every table, the campaigns' included (``install``)."""
        relay.campaigns.install()
        try:
            db = Database(self.config.database)
        except OSError as exc:
            raise StorageUnavailable(f"cannot open the database: {exc}") from None
        command = click.get_current_context(silent=True)
        if command is not None:
            command.call_on_close(db.dispose)
        db.migrate()
        return db


def _set_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Context).config_file = value


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Context).json = True


def common(fn: F) -> F:
    """Adds ``-c`` and ``--json`` to a subcommand, so they may follow it."""
    fn = click.option(
        "-c",
        "--config",
        "config_file",
        type=TEXT,
        expose_value=False,
        callback=_set_config,
        is_eager=True,
        help="Configuration file (default: config/relay.yaml or $RELAY_CONFIG).",
    )(fn)
    fn = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print JSON.",
    )(fn)
    return fn


def handled(fn: F) -> F:
    """Turns errors into a one-line message and an exit status, never a traceback.

    The relay's own errors say what is wrong; anything else is a bug, reported as
    such (with the traceback when ``RELAY_DEBUG`` is set).
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ConfigError as exc:
            click.echo(f"configuration error:\n{exc}", err=True)
            sys.exit(2)
        except (
            directory.DirectoryError,
            StorageUnavailable,
            ArchiveError,
            DkimError,
            PidFileError,
        ) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (``relay archive list | head``): not worth a message.
            _silence_stdout()
            sys.exit(1)
        except OSError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            if os.environ.get("RELAY_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"error: internal error ({type(exc).__name__}: {exc});"
                " set RELAY_DEBUG=1 to see the traceback",
                err=True,
            )
            sys.exit(1)

    return cast(F, wrapper)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; a closed pipe would raise again there.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def emit(ctx: Context, data: Any, lines: Iterable[str] | None = None) -> None:
    if ctx.json or lines is None:
        click.echo(json.dumps(data, ensure_ascii=False, default=str))
    else:
        for line in lines:
            click.echo(line)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


class RelayGroup(click.Group):
    """The ``relay`` group: click's own errors (a missing option, a bad value) say
    ``error:`` as the relay's do, not ``Error:``; the usage and exit status 2 stay."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            buffer = io.StringIO()
            exc.show(file=buffer)
            text = re.sub(r"^Error: ", "error: ", buffer.getvalue(), count=1, flags=re.MULTILINE)
            click.echo(text, err=True, nl=False)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=RelayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common
def main() -> None:
    """Marketplace mail relay."""


# --- serve / check-config ----------------------------------------------------


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
        raise PidFileError(f"relay serve (pid {pid}) has just stopped") from None
    except PermissionError:
        raise PidFileError(
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


# --- sellers -------------------------------------------------------------------


@main.group()
@common
def seller() -> None:
    """Register and update sellers."""


@seller.command("add")
@common
@click.option("--name", type=NAME, required=True, help="The store name buyers see.")
@click.option(
    "--email",
    "emails",
    type=EMAIL,
    multiple=True,
    required=True,
    help="Approved sender address (repeat; the first is where mail goes).",
)
@pass_ctx
@handled
def seller_add(ctx: Context, name: str, emails: tuple[str, ...]) -> None:
    """Register a seller with its approved sender addresses."""
    db = ctx.database()

    def run(s: Session) -> dict[str, Any]:
        seller = directory.add_seller(s, name=name, emails=emails)
        assert seller.id is not None
        return {
            "seller_id": seller.id,
            "emails": [a.email for a in directory.seller_addresses(s, seller.id)],
        }

    data = db.call(run)
    emit(
        ctx,
        {"seller_id": data["seller_id"]},
        [f"seller {data['seller_id']} ({name.strip()}): addresses {', '.join(data['emails'])}"],
    )


ON_OFF = click.Choice(["on", "off"])


def on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


@seller.command("update")
@common
@click.argument("seller_id", type=ID)
@click.option("--messaging", type=ON_OFF, help="Accept new buyers or not.")
@click.option("--add-email", "add_emails", type=EMAIL, multiple=True, help="Approve an address.")
@click.option(
    "--remove-email", "remove_emails", type=EMAIL, multiple=True, help="Withdraw an address."
)
@pass_ctx
@handled
def seller_update(
    ctx: Context,
    seller_id: int,
    messaging: str | None,
    add_emails: tuple[str, ...],
    remove_emails: tuple[str, ...],
) -> None:
    """Switch messaging on or off, add or remove approved addresses."""
    db = ctx.database()

    def run(s: Session) -> dict[str, Any]:
        seller = directory.update_seller(
            s,
            seller_id,
            messaging=on_off(messaging),
            add_emails=add_emails,
            remove_emails=remove_emails,
        )
        return {
            "seller_id": seller.id,
            "name": seller.name,
            "messaging": "on" if seller.messaging_enabled else "off",
            "emails": [a.email for a in directory.seller_addresses(s, seller_id)],
        }

    data = db.call(run)
    emit(
        ctx,
        data,
        [
            f"seller {data['seller_id']} ({data['name']}): messaging {data['messaging']},"
            f" addresses {', '.join(data['emails'])}"
        ],
    )


# --- orders and buyers ---------------------------------------------------------


@main.group()
@common
def order() -> None:
    """Register orders (creates buyers and conversations as needed)."""


@order.command("add")
@common
@click.argument("order_id", type=TEXT)
@click.option("--buyer", "buyer_email", type=EMAIL, required=True, help="The buyer's real address.")
@click.option("--buyer-name", type=NAME, help="The buyer's name, as sellers will see it.")
@click.option("--seller", "seller_id", type=ID, required=True)
@click.option("--category", "categories", type=TEXT, multiple=True, help="Order category (repeat).")
@pass_ctx
@handled
def order_add(
    ctx: Context,
    order_id: str,
    buyer_email: str,
    buyer_name: str | None,
    seller_id: int,
    categories: tuple[str, ...],
) -> None:
    """Register an order; creates the buyer and the conversation if needed."""
    db = ctx.database()
    domain = ctx.config.marketplace.domain

    def run(s: Session) -> dict[str, Any]:
        order, conv = directory.add_order(
            s,
            order_id,
            buyer_email=buyer_email,
            buyer_name=buyer_name,
            seller_id=seller_id,
            categories=categories,
        )
        return {
            "order_id": order.id,
            "conversation_id": conv.id,
            "buyer_token": f"{conv.buyer_token}@{domain}",
            "seller_token": f"{conv.seller_token}@{domain}",
        }

    data = db.call(run)
    emit(
        ctx,
        data,
        [
            f"order {data['order_id']}: conversation {data['conversation_id']},"
            f" buyer token {data['buyer_token']}, seller token {data['seller_token']}"
        ],
    )


@main.group()
@common
def buyer() -> None:
    """Buyers' messaging preferences."""


def _set_opt_out(ctx: Context, email: str, value: bool) -> None:
    db = ctx.database()
    data = db.call(
        lambda s: {"email": directory.set_opt_out(s, email, value).email, "opted_out": value}
    )
    emit(
        ctx,
        data,
        [
            f"{data['email']}: {'opted out of' if value else 'opted in to'}"
            " unsolicited seller messages"
        ],
    )


@buyer.command("opt-out")
@common
@click.argument("email", type=EMAIL)
@pass_ctx
@handled
def buyer_opt_out(ctx: Context, email: str) -> None:
    """Stop unsolicited seller messages to this buyer."""
    _set_opt_out(ctx, email, True)


@buyer.command("opt-in")
@common
@click.argument("email", type=EMAIL)
@pass_ctx
@handled
def buyer_opt_in(ctx: Context, email: str) -> None:
    """Let seller messages reach this buyer again."""
    _set_opt_out(ctx, email, False)


# --- archive -------------------------------------------------------------------


LIMIT = click.option(
    "--limit",
    type=click.IntRange(1, 100000),
    metavar="N",
    default=100,
    show_default=True,
    help="At most N messages, 1 to 100000.",
)
"""The page size of the listing commands."""


@main.group(name="archive")
@common
def archive_group() -> None:
    """Look into the archive, or purge its old messages."""


@archive_group.command("list")
@common
@click.option("--conversation", "conversation_id", type=ID)
@click.option("--status", type=click.Choice([s.value for s in MessageStatus]))
@LIMIT
@pass_ctx
@handled
def archive_list(ctx: Context, conversation_id: int | None, status: str | None, limit: int) -> None:
    """Archived messages, newest first, with direction, status and rule hits."""
    db = ctx.database()
    rows = db.call(
        lambda s: [
            m.as_json()
            for m in archive_mod.list_messages(
                s, conversation_id=conversation_id, status=status, limit=limit
            )
        ]
    )
    emit(
        ctx,
        rows,
        [
            f"{r['id']:>6}  {r['created_at']}  conv {r['conversation_id'] or '-':>4}  "
            f"{r['direction']:<15}  {r['status']:<11}  {r['subject'][:40]}"
            + (
                f"  hits: {', '.join(h['rule_id'] for h in r['rule_hits'])}"
                if r["rule_hits"]
                else ""
            )
            for r in rows
        ]
        or ["no archived messages"],
    )


@archive_group.command("show")
@common
@click.argument("message_id", type=ID)
@click.option("--raw", "which", flag_value="raw", help="Print the message as received.")
@click.option(
    "--delivered", "which", flag_value="delivered", help="Print the message as delivered."
)
@pass_ctx
@handled
def archive_show(ctx: Context, message_id: int, which: str | None) -> None:
    """One archived message: its metadata, rule hits and deliveries, or a copy."""
    db = ctx.database()
    detail = db.call(archive_mod.message_detail, message_id)
    if detail is None:
        raise directory.DirectoryError(f"no archived message with id {message_id}")
    if which:
        rel = detail["received_copy" if which == "raw" else "delivered_copy"]
        if not rel:
            raise directory.DirectoryError(f"message {message_id} has no {which} copy")
        sys.stdout.buffer.write(Archive(ctx.config.archive.path).read(rel))
        return
    lines = [f"{k}: {shown(v)}" for k, v in detail.items() if k not in ("rule_hits", "deliveries")]
    lines += [
        f"rule hit: {h['rule_id']} ({h['action']}) in {h['where'] or 'message'}: {h['detail']}"
        for h in detail["rule_hits"]
    ]
    for d in detail["deliveries"]:
        lines.append(
            f"delivery {d['id']} to {d['recipient']}: {d['status']},"
            f" {plural(d['attempts'], 'attempt')}"
        )
        lines += [f"  {a['at']} {a['outcome']}: {a['reply']}" for a in d["history"]]
    emit(ctx, detail, lines)


@archive_group.command("purge")
@common
@click.option("--dry-run", is_flag=True, help="Count what would be purged; delete nothing.")
@pass_ctx
@handled
def archive_purge(ctx: Context, dry_run: bool) -> None:
    """Purge messages older than archive.retention_days, with their stored copies.

    Quarantined messages, messages not yet delivered, and messages with a notice
    that is kept, are never purged.  The running relay does this once a day.
    """
    from relay.ops import retention

    config = ctx.config
    days = config.archive.retention_days
    if days is None:
        click.echo(
            f"error: archive.retention_days is not set in {ctx.config_path}; set it to the"
            " number of days to keep archived messages",
            err=True,
        )
        sys.exit(2)
    db = ctx.database()
    try:
        report = retention.purge(db, Archive(config.archive.path), days, dry_run=dry_run)
    finally:
        db.dispose()
    emit(ctx, report.as_json(), [report.describe()])


# --- quarantine ------------------------------------------------------------------


@main.group(name="quarantine")
@common
def quarantine_group() -> None:
    """Messages held by a rule, waiting for an admin."""


@quarantine_group.command("list")
@common
@LIMIT
@pass_ctx
@handled
def quarantine_list(ctx: Context, limit: int) -> None:
    """Held messages, newest first, with the rules that held them."""
    db = ctx.database()
    rows = db.call(
        lambda s: [
            m.as_json()
            for m in archive_mod.list_messages(
                s, status=MessageStatus.QUARANTINED.value, limit=limit
            )
        ]
    )
    lines: list[str] = []
    for r in rows:
        lines.append(
            f"{r['id']:>6}  {r['created_at']}  conv {r['conversation_id']}  {r['direction']}"
            f"  from {r['envelope_from'] or '<>'}  {r['subject'][:50]!r}"
        )
        lines += [
            f"        {h['rule_id']} ({h['action']}) in {h['where'] or 'message'}: {h['detail']}"
            for h in r["rule_hits"]
        ]
    emit(ctx, rows, lines or ["no quarantined messages"])


def _decide(ctx: Context, message_id: int, release: bool) -> None:
    from relay.pipeline.accept import Pipeline

    config = ctx.config
    rules = load_rules(config.filters.rules)
    db = ctx.database()
    pipeline = Pipeline(config, db, Archive(config.archive.path), rules)
    decide = pipeline.release if release else pipeline.reject_quarantined
    outcome = db.call(decide, message_id)
    data = {"message_id": message_id, "status": outcome.status}
    emit(ctx, data, [f"message {message_id}: {outcome.status}"])


@quarantine_group.command("release")
@common
@click.argument("message_id", type=ID)
@pass_ctx
@handled
def quarantine_release(ctx: Context, message_id: int) -> None:
    """Deliver a held message (strip and redact rules still apply)."""
    _decide(ctx, message_id, release=True)


@quarantine_group.command("reject")
@common
@click.argument("message_id", type=ID)
@pass_ctx
@handled
def quarantine_reject(ctx: Context, message_id: int) -> None:
    """Refuse a held message; its sender gets the rule's notice."""
    _decide(ctx, message_id, release=False)


# --- queue ---------------------------------------------------------------------


@main.group(name="queue")
@common
def queue_group() -> None:
    """The outbound queue."""


def _delivery_json(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "message_id": d.message_id,
        "recipient": d.recipient,
        "envelope_from": d.envelope_from,
        "status": d.status.value,
        "attempts": d.attempts,
        "next_attempt_at": archive_mod.iso(d.next_attempt_at),
        "last_reply": d.last_reply,
    }


@queue_group.command("list")
@common
@click.option("--all", "include_done", is_flag=True, help="Include finished deliveries.")
@pass_ctx
@handled
def queue_list(ctx: Context, include_done: bool) -> None:
    """Deliveries waiting in the outbound queue."""
    db = ctx.database()
    rows = db.call(
        lambda s: [_delivery_json(d) for d in spool.list_queue(s, include_done=include_done)]
    )
    pending = DeliveryStatus.PENDING.value  # a finished delivery has no next attempt
    emit(
        ctx,
        rows,
        [
            f"{r['id']:>6}  msg {r['message_id']:>6}  {r['status']:<9}  attempts {r['attempts']}"
            f"  next {shown(r['next_attempt_at'] if r['status'] == pending else None)}"
            f"  {shown(r['last_reply'][:60])}"
            for r in rows
        ]
        or ["the queue is empty"],
    )


@queue_group.command("retry")
@common
@click.argument("delivery_id", type=ID)
@pass_ctx
@handled
def queue_retry(ctx: Context, delivery_id: int) -> None:
    """Make a delivery due now (a failed one goes back in the queue)."""
    db = ctx.database()

    def run(s: Session) -> dict[str, Any]:
        d = spool.retry_now(s, delivery_id)
        if d is None:
            raise directory.DirectoryError(f"no delivery with id {delivery_id}")
        if d.status is DeliveryStatus.DELIVERED:
            raise directory.DirectoryError(
                f"delivery {delivery_id} was delivered; nothing to retry"
            )
        return _delivery_json(d)

    data = db.call(run)
    emit(ctx, data, [f"delivery {data['id']}: {data['status']}, due now"])


# --- conversations ----------------------------------------------------------------


class ConversationGroup(click.Group):
    """``relay conversation ID`` is ``relay conversation show ID``: the command
    showed a conversation before it had subcommands, and scripts still call it so."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0].isascii() and args[0].isdigit() and "show" in self.commands:
            return "show", self.commands["show"], args
        return super().resolve_command(ctx, args)


@main.group(name="conversation", cls=ConversationGroup)
@common
def conversation_group() -> None:
    """One conversation: show it (`relay conversation ID` is short for `show ID`),
    or mark it as needing no response."""


@conversation_group.command("show")
@common
@click.argument("conversation_id", type=ID)
@pass_ctx
@handled
def conversation_show(ctx: Context, conversation_id: int) -> None:
    """Show one conversation's tokens and state."""
    db = ctx.database()
    domain = ctx.config.marketplace.domain

    def run(s: Session) -> dict[str, Any]:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            raise directory.DirectoryError(f"no conversation with id {conversation_id}")
        count = archive_mod.count_messages(s, conversation_id=conversation_id)
        return {
            "conversation_id": conv.id,
            "buyer_token": f"{conv.buyer_token}@{domain}",
            "seller_token": f"{conv.seller_token}@{domain}",
            "seller_id": conv.seller_id,
            "buyer_initiated": conv.buyer_initiated,
            "messages": count,
        }

    try:
        data = db.call(run)
    finally:
        db.dispose()
    emit(ctx, data, [f"{k}: {shown(v)}" for k, v in data.items()])


@conversation_group.command("no-response-needed")
@common
@click.argument("conversation_id", type=ID)
@pass_ctx
@handled
def conversation_no_response_needed(ctx: Context, conversation_id: int) -> None:
    """Mark that the seller need not answer: stops the response clock of every
    unanswered buyer message in the conversation without counting it as late."""
    from relay.ops import response_times

    db = ctx.database()
    try:
        stopped = db.write(response_times.mark_no_response_needed, conversation_id)
    finally:
        db.dispose()
    data = {"conversation_id": conversation_id, "messages": stopped}
    if stopped:
        line = (
            f"conversation {conversation_id}: no response needed;"
            f" stopped the clock of {plural(stopped, 'buyer message')}"
        )
    else:
        line = (
            f"conversation {conversation_id}: no response needed;"
            " no buyer message was waiting for an answer"
        )
    emit(ctx, data, [line])


# --- response times ----------------------------------------------------------------

if TYPE_CHECKING:
    from datetime import datetime


def when(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """A click callback: ``YYYY-MM-DD`` or an ISO datetime, UTC unless it says."""
    from relay.ops.response_times import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD) or an ISO datetime"
        ) from None


@main.command("responses")
@common
@click.option("--seller", "seller_id", type=ID, help="Only this seller.")
@click.option(
    "--since",
    type=TEXT,
    metavar="DATE",
    callback=when,
    help="Only buyer messages sent at or after this date (YYYY-MM-DD or ISO datetime, UTC).",
)
@pass_ctx
@handled
def responses_report(ctx: Context, seller_id: int | None, since: datetime | None) -> None:
    """Sellers' response times: buyer messages answered within 24 h, late, open;
    median and 90th percentile."""
    from relay.core import clock
    from relay.ops import response_times

    db = ctx.database()
    try:
        figures = db.call(
            response_times.response_stats, now=clock.now(), seller_id=seller_id, since=since
        )
    finally:
        db.dispose()
    emit(
        ctx,
        [f.as_json() for f in figures],
        [response_times.describe(f) for f in figures] or ["no buyer messages"],
    )


# --- dkim ------------------------------------------------------------------------


@main.group()
@common
def dkim() -> None:
    """DKIM keys for the marketplace domain."""


@dkim.command("keygen")
@common
@click.option(
    "--selector",
    type=TEXT,
    help="Must be dkim.selector of the configuration, which is what the relay signs"
    " with (the default); to use another, set dkim.selector first.",
)
@click.option("--force", is_flag=True, help="Replace an existing key.")
@click.option(
    "--ed25519",
    "ed25519",
    is_flag=True,
    help="Also write the Ed25519 key named by dkim.ed25519_key.",
)
@pass_ctx
@handled
def dkim_keygen(ctx: Context, selector: str | None, force: bool, ed25519: bool) -> None:
    """Write the DKIM key and print the DNS TXT record to publish.

    The key goes to dkim.private_key and the record is named after
    dkim.selector: the relay signs with that pair.
    """
    config = ctx.config
    try:
        selector = check_selector(selector) if selector is not None else config.dkim.selector
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--selector'") from None
    if selector != config.dkim.selector:
        # A record for another selector would never verify: the relay signs
        # s=<dkim.selector>, with the key this command is about to replace.
        raise click.BadParameter(
            f"the relay signs with dkim.selector {config.dkim.selector!r}, so a key"
            f" published as {selector!r} would never be used: set"
            f" `dkim.selector: {selector}` in {ctx.config_path} first, or omit --selector",
            param_hint="'--selector'",
        )
    domain = config.marketplace.domain
    path: Path = config.dkim.private_key
    ed_path = config.dkim.ed25519_key or path.with_name(path.stem + ".ed25519")
    for existing in [path, ed_path] if ed25519 else [path]:
        if existing.exists() and not force:
            raise directory.DirectoryError(f"{existing} exists; use --force to replace it")
    records = [
        {
            "name": txt_record_name(selector, domain),
            "type": "TXT",
            "value": _write_key(generate_rsa_key, path),
            "key": str(path),
        }
    ]
    if ed25519:
        records.append(
            {
                "name": txt_record_name(ed25519_selector(selector), domain),
                "type": "TXT",
                "value": _write_key(generate_ed25519_key, ed_path),
                "key": str(ed_path),
            }
        )
    emit(
        ctx,
        records if len(records) > 1 else records[0],
        [f"{r['name']}. IN TXT {_zone_strings(r['value'])}" for r in records],
    )
    if ed25519 and config.dkim.ed25519_key is None:
        click.echo(
            f"note: set dkim.ed25519_key: {ed_path} in {ctx.config_path} to sign with Ed25519",
            err=True,
        )
    if not config.dkim.enabled:
        click.echo(f"note: dkim.enabled is false in {ctx.config_path}", err=True)


def _write_key(generate: Callable[[Path], str], path: Path) -> str:
    try:
        return generate(path)
    except OSError as exc:
        raise directory.DirectoryError(
            f"cannot write the key {path}: {exc.strerror or exc}"
        ) from None


def _zone_strings(value: str) -> str:
    """A TXT value as zone-file strings: one string holds at most 255 bytes (RFC 1035)."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    quoted = " ".join(f'"{p}"' for p in parts)
    return quoted if len(parts) == 1 else f"( {quoted} )"


# --- TLS ---------------------------------------------------------------------------


@main.group()
@common
def tls() -> None:
    """TLS certificates."""


@tls.command("selfsigned")
@common
@click.option("--hostname", type=TEXT, help="Name in the certificate (default: smtp.hostname).")
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    metavar="N",
    default=365,
    show_default=True,
    help="Valid for N days, 1 to 3650.",
)
@click.option("--force", is_flag=True, help="Replace an existing certificate and key.")
@pass_ctx
@handled
def tls_selfsigned(ctx: Context, hostname: str | None, days: int, force: bool) -> None:
    """Write a self-signed certificate for trying STARTTLS out.

    It goes where smtp.tls_cert and smtp.tls_key say, or to tls/relay.crt and
    tls/relay.key next to the configuration file.  Senders will not trust it:
    production needs a certificate from a real authority.
    """
    from relay.core.tls import generate_self_signed

    config = ctx.config
    base = ctx.config_path.parent.resolve()
    cert = config.smtp.tls_cert or base / "tls" / "relay.crt"
    key = config.smtp.tls_key or base / "tls" / "relay.key"
    for existing in (cert, key):
        if existing.exists() and not force:
            raise directory.DirectoryError(f"{existing} exists; use --force to replace it")
    name = hostname or config.smtp.hostname
    generate_self_signed(cert, key, hostname=name, days=days)
    emit(
        ctx,
        {"certificate": str(cert), "key": str(key), "hostname": name, "days": days},
        [f"wrote {cert} and {key} for {name}, valid {days} days"],
    )
    if config.smtp.tls_cert is None:
        click.echo(
            f"note: set smtp.tls_cert: {cert} and smtp.tls_key: {key} in {ctx.config_path}"
            " to offer STARTTLS",
            err=True,
        )


# The brand-campaign commands register themselves on ``main``.
from relay.cli import campaigns  # noqa: E402, F401
