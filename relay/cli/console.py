"""The web console's users: ``relay console user add|passwd|remove|list``."""

from __future__ import annotations

import sys

import click

from relay.cli.base import CliError, Context, common, emit, handled, main, pass_ctx, write
from relay.console import accounts


def read_password() -> str:
    """The password, from standard input (its first line): never an argument,
    which would be seen in the process list and the shell's history."""
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("no password on standard input")
    return str(password)


@main.group("console")
@common
def console_group() -> None:
    """The web console (README, "The web console")."""


@console_group.group("user")
@common
def user() -> None:
    """Console users: admin, moderator, brand:ID or seller:ID."""


@user.command("add")
@common
@click.argument("username")
@click.option(
    "--role",
    required=True,
    help="admin, moderator, brand:ID (that brand's pages) or seller:ID (that seller's).",
)
@pass_ctx
@handled
def user_add(ctx: Context, username: str, role: str) -> None:
    """Add a user; the password is read from standard input."""
    password = read_password()
    account = write(ctx, accounts.add, username, role, password)
    emit(
        ctx,
        {"username": account.username, "role": account.role_text},
        [f"user {account.username} ({account.role_text}) added"],
    )


@user.command("passwd")
@common
@click.argument("username")
@pass_ctx
@handled
def user_passwd(ctx: Context, username: str) -> None:
    """Set a new password (from standard input); the user's sessions end."""
    password = read_password()
    account = write(ctx, accounts.set_password, username, password)
    emit(ctx, {"username": account.username, "changed": True}, [f"password of {username} set"])


@user.command("remove")
@common
@click.argument("username")
@pass_ctx
@handled
def user_remove(ctx: Context, username: str) -> None:
    """Remove a user; their sessions end at once."""
    account = write(ctx, accounts.remove, username)
    emit(ctx, {"username": account.username, "removed": True}, [f"user {username} removed"])


@user.command("list")
@common
@pass_ctx
@handled
def user_list(ctx: Context) -> None:
    """Every console user and their role."""
    users = write(ctx, accounts.listed)
    emit(
        ctx,
        [{"username": a.username, "role": a.role_text} for a in users],
        [f"{a.username:<24} {a.role_text}" for a in users] or ["no console users"],
    )
