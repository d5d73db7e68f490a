"""The marketplace's directory: ``relay seller``, ``order`` and ``buyer``."""

from __future__ import annotations

from typing import Any

import click
from sqlmodel import Session

from relay.cli.base import (
    EMAIL,
    ID,
    NAME,
    ON_OFF,
    TEXT,
    Context,
    common,
    emit,
    handled,
    main,
    on_off,
    pass_ctx,
)
from relay.storage import directory

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
