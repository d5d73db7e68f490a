"""What brand campaigns are made of: ``relay brand``, ``follower`` and ``product``.

Every change goes through the database's writer (``write``), whose transactions
are the ones the dispatcher's take turns with, so a command and a running
relay never half-see each other's work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from sqlmodel import Session

from relay.campaigns import catalog
from relay.campaigns.models import Brand, Product
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
    plural,
    read,
    when,
    write,
)
from relay.core import clock


def _brand_json(b: Brand, followers: int) -> dict[str, Any]:
    return {
        "brand_id": b.id,
        "name": b.name,
        "registered": b.registered,
        "store_page": b.store_page,
        "followers": followers,
    }


def _product_json(p: Product) -> dict[str, Any]:
    return {
        "product_id": p.id,
        "brand_id": p.brand_id,
        "sku": p.sku,
        "title": p.title,
        "price": p.price,
        "description": p.description,
    }


# --- brands ---------------------------------------------------------------------


@main.group()
@common
def brand() -> None:
    """Brands that may send campaigns to their followers."""


@brand.command("add")
@common
@click.option("--name", type=NAME, required=True)
@click.option("--registered/--not-registered", default=False, help="In the brand registry.")
@click.option("--store-page/--no-store-page", default=False, help="Has a store page.")
@pass_ctx
@handled
def brand_add(ctx: Context, name: str, registered: bool, store_page: bool) -> None:
    """Register a brand; campaigns need it registered, with a store page and followers."""

    def run(s: Session) -> dict[str, Any]:
        return _brand_json(
            catalog.add_brand(s, name=name, registered=registered, store_page=store_page), 0
        )

    data = write(ctx, run)
    emit(ctx, data, [f"brand {data['brand_id']} ({data['name']})"])


@brand.command("update")
@common
@click.argument("brand_id", type=ID)
@click.option("--registered", type=ON_OFF)
@click.option("--store-page", type=ON_OFF)
@pass_ctx
@handled
def brand_update(
    ctx: Context, brand_id: int, registered: str | None, store_page: str | None
) -> None:
    """Change a brand's registry enrolment or store page."""

    def run(s: Session) -> dict[str, Any]:
        b = catalog.update_brand(
            s, brand_id, registered=on_off(registered), store_page=on_off(store_page)
        )
        return _brand_json(b, catalog.active_followers(s, brand_id))

    data = write(ctx, run)
    emit(ctx, data, [_brand_line(data)])


def _brand_line(d: dict[str, Any]) -> str:
    flags = [
        "registered" if d["registered"] else "not registered",
        "store page" if d["store_page"] else "no store page",
    ]
    return (
        f"brand {d['brand_id']} ({d['name']}): {', '.join(flags)},"
        f" {plural(d['followers'], 'follower')}"
    )


@brand.command("list")
@common
@pass_ctx
@handled
def brand_list(ctx: Context) -> None:
    """Every brand, with its active followers."""
    from sqlmodel import col, select

    def run(s: Session) -> list[dict[str, Any]]:
        brands = s.exec(select(Brand).order_by(col(Brand.id))).all()
        return [_brand_json(b, catalog.active_followers(s, b.id or 0)) for b in brands]

    data = read(ctx, run)
    emit(ctx, data, [_brand_line(d) for d in data] or ["no brands"])


# --- followers --------------------------------------------------------------------


@main.group()
@common
def follower() -> None:
    """Customers who follow a brand's store page."""


@follower.command("add")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@click.option("--email", type=EMAIL, required=True)
@click.option("--name", type=NAME, default="")
@click.option("--since", type=TEXT, callback=when, metavar="DATE", help="Followed since.")
@pass_ctx
@handled
def follower_add(
    ctx: Context, brand_id: int, email: str, name: str, since: datetime | None
) -> None:
    """A customer follows the brand (again, after unsubscribing)."""

    def run(s: Session) -> dict[str, Any]:
        f = catalog.follow(s, brand_id, email, name=name, since=since)
        return {"follower_id": f.id, "brand_id": brand_id}

    data = write(ctx, run)
    emit(ctx, data, [f"follower {data['follower_id']} of brand {brand_id}"])


@follower.command("remove")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@click.option("--email", type=EMAIL, required=True)
@pass_ctx
@handled
def follower_remove(ctx: Context, brand_id: int, email: str) -> None:
    """Unsubscribe a follower from the brand's campaigns (as the link does)."""

    def run(s: Session) -> dict[str, Any]:
        f = catalog.unfollow(s, brand_id, email)
        return {"follower_id": f.id, "brand_id": brand_id, "unsubscribed": True}

    data = write(ctx, run)
    emit(ctx, data, [f"follower {data['follower_id']} unsubscribed from brand {brand_id}"])


@follower.command("list")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@pass_ctx
@handled
def follower_list(ctx: Context, brand_id: int) -> None:
    """A brand's followers (an admin command: it shows their addresses)."""

    def run(s: Session) -> list[dict[str, Any]]:
        return [
            {
                "follower_id": f.id,
                "email": b.email,
                "name": b.name,
                "followed_since": clock.as_utc(f.followed_since).isoformat(),
                "unsubscribed_at": clock.as_utc(f.unsubscribed_at).isoformat()
                if f.unsubscribed_at
                else None,
                "opted_out": b.opted_out,
            }
            for f, b in catalog.followers(s, brand_id)
        ]

    data = read(ctx, run)
    emit(
        ctx,
        data,
        [
            f"{d['follower_id']}: {d['email']}"
            + (" (unsubscribed)" if d["unsubscribed_at"] else "")
            + (" (opted out)" if d["opted_out"] else "")
            for d in data
        ]
        or ["no followers"],
    )


# --- products ----------------------------------------------------------------------


@main.group()
@common
def product() -> None:
    """A brand's products, which campaigns feature."""


@product.command("add")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@click.option("--sku", type=TEXT, required=True, help="The marketplace's product id.")
@click.option("--title", type=NAME, required=True)
@click.option("--price", type=TEXT, default="", help="As shown, currency included.")
@click.option("--description", type=TEXT, default="")
@pass_ctx
@handled
def product_add(
    ctx: Context, brand_id: int, sku: str, title: str, price: str, description: str
) -> None:
    """Add a product to a brand's catalogue."""

    def run(s: Session) -> dict[str, Any]:
        p = catalog.add_product(
            s, brand_id, sku=sku, title=title, price=price, description=description
        )
        return _product_json(p)

    data = write(ctx, run)
    emit(ctx, data, [f"product {data['product_id']} ({data['sku']}): {data['title']}"])


@product.command("list")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@pass_ctx
@handled
def product_list(ctx: Context, brand_id: int) -> None:
    """A brand's products."""
    data = read(ctx, lambda s: [_product_json(p) for p in catalog.products(s, brand_id)])
    emit(
        ctx,
        data,
        [f"product {d['product_id']} ({d['sku']}): {d['title']} {d['price']}" for d in data]
        or ["no products"],
    )
