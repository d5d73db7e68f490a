"""What the relay holds: ``relay archive``, ``quarantine`` and ``queue``."""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlmodel import Session

from relay.cli.base import (
    ID,
    CliError,
    Context,
    common,
    emit,
    handled,
    main,
    pass_ctx,
    plural,
    shown,
)
from relay.delivery import spool
from relay.filters import load_rules
from relay.storage import archive as archive_mod
from relay.storage import decisions
from relay.storage.archive import Archive
from relay.storage.models import DeliveryStatus, MessageStatus

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
        raise CliError(f"no archived message with id {message_id}")
    if which:
        rel = detail["received_copy" if which == "raw" else "delivered_copy"]
        if not rel:
            raise CliError(f"message {message_id} has no {which} copy")
        sys.stdout.buffer.write(Archive(ctx.config.archive.path).read(rel))
        return
    lists = ("rule_hits", "deliveries", "decisions")
    lines = [f"{k}: {shown(v)}" for k, v in detail.items() if k not in lists]
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
    lines += [f"decision: {decisions.describe(d)}" for d in detail["decisions"]]
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
    from relay.pipeline import quarantine

    config = ctx.config
    rules = load_rules(config.filters.rules)
    db = ctx.database()
    archive = Archive(config.archive.path)
    Action = decisions.Action
    decide = decisions.recorded(
        quarantine.release if release else quarantine.reject,
        actor=decisions.CLI,
        action=Action.QUARANTINE_RELEASE if release else Action.QUARANTINE_REJECT,
        subject=decisions.message_subject(message_id),
    )
    outcome = db.call(decide, message_id, config=config, archive=archive, rules=rules)
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


@queue_group.command("list")
@common
@click.option("--all", "include_done", is_flag=True, help="Include finished deliveries.")
@pass_ctx
@handled
def queue_list(ctx: Context, include_done: bool) -> None:
    """Deliveries waiting in the outbound queue."""
    db = ctx.database()
    rows = db.call(
        lambda s: [
            archive_mod.delivery_json(d) for d in spool.list_queue(s, include_done=include_done)
        ]
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
            raise CliError(f"no delivery with id {delivery_id}")
        if d.status is DeliveryStatus.DELIVERED:
            raise CliError(f"delivery {delivery_id} was delivered; nothing to retry")
        return archive_mod.delivery_json(d)

    data = db.call(run)
    emit(ctx, data, [f"delivery {data['id']}: {data['status']}, due now"])
