"""The ``relay`` command (SPEC §7).

``-c/--config`` and ``--json`` are accepted before or after the subcommand.
Errors are one clear line on stderr and a non-zero exit status: 2 for bad
arguments or configuration, 1 for a request that cannot be carried out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from sqlmodel import Session

from relay import archive as archive_mod
from relay import queue, store
from relay.archive import Archive, ArchiveError
from relay.config import RelayConfig, config_path, load_config
from relay.db import Database, StorageUnavailable
from relay.dkim_sign import (
    DkimError,
    ed25519_selector,
    generate_ed25519_key,
    generate_rsa_key,
    txt_record_name,
)
from relay.filters import load_rules
from relay.models import Conversation
from relay.yamlload import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self) -> None:
        self.config_file: str | None = None
        self.json = False
        self._config: RelayConfig | None = None

    @property
    def config(self) -> RelayConfig:
        if self._config is None:
            self._config = load_config(config_path(self.config_file))
        return self._config

    def database(self) -> Database:
        db = Database(self.config.database)
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
    """Turns the relay's own errors into a one-line message and an exit status."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"configuration error:\n{exc}", err=True)
            sys.exit(2)
        except store.DirectoryError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (StorageUnavailable, ArchiveError, DkimError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return cast(F, wrapper)


def emit(ctx: Context, data: Any, lines: Iterable[str] | None = None) -> None:
    if ctx.json or lines is None:
        click.echo(json.dumps(data, ensure_ascii=False, default=str))
    else:
        for line in lines:
            click.echo(line)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common
def main() -> None:
    """Marketplace mail relay."""


# --- serve / check-config ----------------------------------------------------


@main.command()
@common
@click.option("-v", "--verbose", is_flag=True, help="Log every SMTP command.")
@pass_ctx
@handled
def serve(ctx: Context, verbose: bool) -> None:
    """Run the SMTP server and the delivery workers until stopped."""
    from relay.app import Relay

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    config = ctx.config
    relay = Relay(config)
    try:
        asyncio.run(relay.serve_forever())
    except OSError as exc:
        click.echo(
            f"error: cannot listen on {config.smtp.host}:{config.smtp.port}: {exc}", err=True
        )
        sys.exit(1)


@main.command("check-config")
@common
@pass_ctx
def check_config(ctx: Context) -> None:
    """Validate the configuration and the filter rules."""
    problems: list[str] = []
    path = config_path(ctx.config_file)
    try:
        config = ctx.config
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if config.filters.rules.exists():
        try:
            rules = load_rules(config.filters.rules)
        except ConfigError as exc:
            problems.extend(exc.problems)
    else:
        problems.append(f"{path}: filters.rules: {config.filters.rules} does not exist")
    if problems:
        click.echo("\n".join(problems), err=True)
        sys.exit(1)
    emit(
        ctx,
        {"config": str(path), "rules": len(rules.rules), "ok": True},
        [f"{path}: OK ({len(rules.rules)} filter rules)"],
    )


# --- sellers -------------------------------------------------------------------


@main.group()
def seller() -> None:
    """Register and update sellers."""


@seller.command("add")
@common
@click.option("--name", required=True, help="The store name buyers see.")
@click.option(
    "--email",
    "emails",
    multiple=True,
    required=True,
    help="Approved sender address (repeat; the first is where mail goes).",
)
@pass_ctx
@handled
def seller_add(ctx: Context, name: str, emails: tuple[str, ...]) -> None:
    db = ctx.database()
    result = db.call(lambda s: store.add_seller(s, name=name, emails=emails).id)
    emit(ctx, {"seller_id": result})


def _on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


@seller.command("update")
@common
@click.argument("seller_id", type=int)
@click.option("--messaging", type=click.Choice(["on", "off"]), help="Accept new buyers or not.")
@click.option("--add-email", "add_emails", multiple=True)
@click.option("--remove-email", "remove_emails", multiple=True)
@pass_ctx
@handled
def seller_update(
    ctx: Context,
    seller_id: int,
    messaging: str | None,
    add_emails: tuple[str, ...],
    remove_emails: tuple[str, ...],
) -> None:
    db = ctx.database()

    def run(s: Session) -> dict[str, Any]:
        seller = store.update_seller(
            s,
            seller_id,
            messaging=_on_off(messaging),
            add_emails=add_emails,
            remove_emails=remove_emails,
        )
        return {
            "seller_id": seller.id,
            "name": seller.name,
            "messaging": "on" if seller.messaging_enabled else "off",
            "emails": [a.email for a in store.seller_addresses(s, seller_id)],
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
def order() -> None:
    """Register orders (creates buyers and conversations as needed)."""


@order.command("add")
@common
@click.argument("order_id")
@click.option("--buyer", "buyer_email", required=True, help="The buyer's real address.")
@click.option("--buyer-name", help="The buyer's name, as sellers will see it.")
@click.option("--seller", "seller_id", type=int, required=True)
@click.option("--category", "categories", multiple=True, help="Order category (repeat).")
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
    db = ctx.database()
    domain = ctx.config.marketplace.domain

    def run(s: Session) -> dict[str, Any]:
        order, conv = store.add_order(
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

    emit(ctx, db.call(run))


@main.group()
def buyer() -> None:
    """Buyers' messaging preferences."""


def _set_opt_out(ctx: Context, email: str, value: bool) -> None:
    db = ctx.database()
    data = db.call(
        lambda s: {"email": store.set_opt_out(s, email, value).email, "opted_out": value}
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
@click.argument("email")
@pass_ctx
@handled
def buyer_opt_out(ctx: Context, email: str) -> None:
    _set_opt_out(ctx, email, True)


@buyer.command("opt-in")
@common
@click.argument("email")
@pass_ctx
@handled
def buyer_opt_in(ctx: Context, email: str) -> None:
    _set_opt_out(ctx, email, False)


# --- archive -------------------------------------------------------------------


@main.group(name="archive")
def archive_group() -> None:
    """Look into the archive."""


@archive_group.command("list")
@common
@click.option("--conversation", "conversation_id", type=int)
@click.option("--status")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@pass_ctx
@handled
def archive_list(ctx: Context, conversation_id: int | None, status: str | None, limit: int) -> None:
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
        ],
    )


@archive_group.command("show")
@common
@click.argument("message_id", type=int)
@click.option("--raw", "which", flag_value="raw", help="Print the message as received.")
@click.option(
    "--delivered", "which", flag_value="delivered", help="Print the message as delivered."
)
@pass_ctx
@handled
def archive_show(ctx: Context, message_id: int, which: str | None) -> None:
    db = ctx.database()
    detail = db.call(archive_mod.message_detail, message_id)
    if detail is None:
        raise store.DirectoryError(f"no archived message with id {message_id}")
    if which:
        rel = detail["received_copy" if which == "raw" else "delivered_copy"]
        if not rel:
            raise store.DirectoryError(f"message {message_id} has no {which} copy")
        sys.stdout.buffer.write(Archive(ctx.config.archive.path).read(rel))
        return
    lines = [f"{k}: {v}" for k, v in detail.items() if k not in ("rule_hits", "deliveries")]
    lines += [
        f"rule hit: {h['rule_id']} ({h['action']}): {h['detail']}" for h in detail["rule_hits"]
    ]
    for d in detail["deliveries"]:
        lines.append(
            f"delivery {d['id']} to {d['recipient']}: {d['status']}, {d['attempts']} attempts"
        )
        lines += [f"  {a['at']} {a['outcome']}: {a['reply']}" for a in d["history"]]
    emit(ctx, detail, lines)


# --- queue ---------------------------------------------------------------------


@main.group(name="queue")
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
    db = ctx.database()
    rows = db.call(
        lambda s: [_delivery_json(d) for d in queue.list_queue(s, include_done=include_done)]
    )
    emit(
        ctx,
        rows,
        [
            f"{r['id']:>6}  msg {r['message_id']:>6}  {r['status']:<9}  attempts {r['attempts']}"
            f"  next {r['next_attempt_at']}  {r['last_reply'][:60]}"
            for r in rows
        ]
        or ["the queue is empty"],
    )


@queue_group.command("retry")
@common
@click.argument("delivery_id", type=int)
@pass_ctx
@handled
def queue_retry(ctx: Context, delivery_id: int) -> None:
    db = ctx.database()

    def run(s: Session) -> dict[str, Any]:
        d = queue.retry_now(s, delivery_id)
        if d is None:
            raise store.DirectoryError(f"no delivery with id {delivery_id}")
        return _delivery_json(d)

    data = db.call(run)
    emit(ctx, data, [f"delivery {data['id']}: {data['status']}, due now"])


# --- conversations ----------------------------------------------------------------


@main.command("conversation")
@common
@click.argument("conversation_id", type=int)
@pass_ctx
@handled
def conversation_show(ctx: Context, conversation_id: int) -> None:
    """Show one conversation's tokens and state."""
    db = ctx.database()
    domain = ctx.config.marketplace.domain

    def run(s: Session) -> dict[str, Any]:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            raise store.DirectoryError(f"no conversation with id {conversation_id}")
        count = len(archive_mod.list_messages(s, conversation_id=conversation_id, limit=100000))
        return {
            "conversation_id": conv.id,
            "buyer_token": f"{conv.buyer_token}@{domain}",
            "seller_token": f"{conv.seller_token}@{domain}",
            "seller_id": conv.seller_id,
            "buyer_initiated": conv.buyer_initiated,
            "messages": count,
        }

    data = db.call(run)
    emit(ctx, data, [f"{k}: {v}" for k, v in data.items()])


# --- dkim ------------------------------------------------------------------------


@main.group()
def dkim() -> None:
    """DKIM keys for the marketplace domain."""


@dkim.command("keygen")
@common
@click.option("--selector", help="Selector (default: dkim.selector from the configuration).")
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
    config = ctx.config
    selector = selector or config.dkim.selector
    domain = config.marketplace.domain
    path: Path = config.dkim.private_key
    if path.exists() and not force:
        raise store.DirectoryError(f"{path} exists; use --force to replace it")
    records = [
        {
            "name": txt_record_name(selector, domain),
            "type": "TXT",
            "value": generate_rsa_key(path),
            "key": str(path),
        }
    ]
    if ed25519:
        ed_path = config.dkim.ed25519_key or path.with_name(path.stem + ".ed25519")
        records.append(
            {
                "name": txt_record_name(ed25519_selector(selector), domain),
                "type": "TXT",
                "value": generate_ed25519_key(ed_path),
                "key": str(ed_path),
            }
        )
    emit(
        ctx,
        records if len(records) > 1 else records[0],
        [f'{r["name"]}. IN TXT "{r["value"]}"' for r in records],
    )


if __name__ == "__main__":  # pragma: no cover
    main()
