"""Conversations and how sellers answer them: ``relay conversation`` and
``relay responses``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from sqlmodel import Session

from relay.cli.base import (
    ID,
    TEXT,
    CliError,
    Context,
    common,
    emit,
    handled,
    main,
    pass_ctx,
    plural,
    shown,
    when,
)
from relay.storage import archive as archive_mod
from relay.storage.models import Conversation

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
            raise CliError(f"no conversation with id {conversation_id}")
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
