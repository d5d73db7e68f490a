"""What every ``relay`` subcommand shares (README, "Command line"): the group
``main``, the context object, the option types, JSON or text output and the
error handling.  The subject modules import this one and nothing else of the
CLI, so that they register on ``main`` without importing one another.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import click
from sqlmodel import Session

import relay.campaigns
from relay.core import addresses, names
from relay.core.config import DEFAULT_CONFIG, RelayConfig, config_path, load_config
from relay.core.pidfile import PidFileError
from relay.core.yamlload import ConfigError
from relay.delivery.dkim_sign import DkimError
from relay.storage import directory
from relay.storage.archive import ArchiveError
from relay.storage.db import Database, StorageUnavailable

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
T = TypeVar("T")


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


class CliError(click.ClickException):
    """A request the command itself finds it cannot carry out ("... exists; use
    --force to replace it", "no delivery with id 7"): not the directory's error,
    which the directory's own refusals keep.  Reported as they are, ``error:
    MESSAGE`` on stderr and exit status 1, by ``RelayGroup`` as click's own errors."""

    exit_code = 1


def handled(fn: F) -> F:
    """Turns errors into a one-line message and an exit status, never a traceback.

    The relay's own errors say what is wrong; anything else is a bug, reported as
    such (with the traceback when ``RELAY_DEBUG`` is set).  Click's errors, and
    ``CliError``, pass through to ``RelayGroup``, which prints them.
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


# --- values the subcommands share ------------------------------------------------


ON_OFF = click.Choice(["on", "off"])


def on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


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


def iso_date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    """A click callback: a day, ``YYYY-MM-DD``."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@contextmanager
def opened(ctx: Context) -> Iterator[Database]:
    """The database for the length of a ``with`` block."""
    db = ctx.database()
    try:
        yield db
    finally:
        db.dispose()


def write(ctx: Context, fn: Callable[Concatenate[Session, P], T], *a: P.args, **k: P.kwargs) -> T:
    """``fn(session, ...)`` through the database's writer (``db.write``), whose
    transactions a running relay's take turns with."""
    with opened(ctx) as db:
        return db.write(fn, *a, **k)


def read(ctx: Context, fn: Callable[Concatenate[Session, P], T], *a: P.args, **k: P.kwargs) -> T:
    with opened(ctx) as db:
        return db.call(fn, *a, **k)
