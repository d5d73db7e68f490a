"""What brand campaigns may show or be themed on: ``relay promotion`` and ``event``.

Every change goes through the database's writer (``write``), whose transactions
are the ones the dispatcher's take turns with, so a command and a running
relay never half-see each other's work.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import click
from sqlmodel import Session

from relay.campaigns import catalog
from relay.campaigns.models import Promotion, PromotionKind, PromotionStatus, ShoppingEvent
from relay.cli.base import (
    ID,
    NAME,
    TEXT,
    Context,
    common,
    emit,
    handled,
    iso_date,
    main,
    pass_ctx,
    read,
    when,
    write,
)
from relay.core import clock
from relay.storage import decisions


def _promotion_json(p: Promotion) -> dict[str, Any]:
    return {
        "promotion_id": p.id,
        "product_id": p.product_id,
        "kind": p.kind.value,
        "discount": p.discount,
        "starts_at": clock.as_utc(p.starts_at).isoformat(),
        "ends_at": clock.as_utc(p.ends_at).isoformat(),
        "status": p.status.value,
    }


def _promotion_line(p: Promotion) -> str:
    what = f"{p.discount}% off" if p.kind is PromotionKind.PERCENT_OFF else f"{p.discount} off"
    starts, ends = clock.as_utc(p.starts_at), clock.as_utc(p.ends_at)
    return (
        f"promotion {p.id}: product {p.product_id}, {what}, {starts:%Y-%m-%d %H:%M} to"
        f" {ends:%Y-%m-%d %H:%M} UTC, {p.status.value}"
    )


def _event_json(e: ShoppingEvent) -> dict[str, Any]:
    return {
        "event_id": e.id,
        "name": e.name,
        "starts_on": e.starts_on.isoformat(),
        "ends_on": e.ends_on.isoformat(),
    }


# --- promotions ------------------------------------------------------------------------


@main.group()
@common
def promotion() -> None:
    """Promotions on products, which campaigns may show."""


@promotion.command("add")
@common
@click.option("--product", "product_id", type=ID, required=True)
@click.option("--kind", type=click.Choice([k.value for k in PromotionKind]), required=True)
@click.option("--discount", type=TEXT, required=True, help="Percent, or amount in the currency.")
@click.option(
    "--start",
    "starts_at",
    type=TEXT,
    callback=when,
    required=True,
    metavar="DATE",
    help="When it starts: YYYY-MM-DD (00:00 UTC that day) or an ISO datetime.",
)
@click.option(
    "--end",
    "ends_at",
    type=TEXT,
    callback=when,
    required=True,
    metavar="DATE",
    help="When it ends: YYYY-MM-DD means 00:00 UTC that day, so that day is NOT"
    " included (--end 2026-12-01 runs through 30 November); or an ISO datetime.",
)
@click.option("--approved", is_flag=True, help="Approved at once (else pending).")
@pass_ctx
@handled
def promotion_add(
    ctx: Context,
    product_id: int,
    kind: str,
    discount: str,
    starts_at: datetime,
    ends_at: datetime,
    approved: bool,
) -> None:
    """Create a promotion (pending approval unless --approved).

    Its period runs from --start up to, not including, --end (unlike a shopping
    event's dates, which are both inclusive).
    """

    def run(s: Session) -> dict[str, Any]:
        p = catalog.add_promotion(
            s,
            product_id,
            kind=PromotionKind(kind),
            discount=discount,
            starts_at=starts_at,
            ends_at=ends_at,
            approved=approved,
        )
        return _promotion_json(p)

    data = write(ctx, run)
    emit(ctx, data, [f"promotion {data['promotion_id']}: {data['status']}"])


def _set_promotion(
    ctx: Context, promotion_id: int, status: PromotionStatus, decision: decisions.Action | None
) -> None:
    """``decision``: moderation's, logged (a brand's cancel is not one)."""

    def run(s: Session) -> dict[str, Any]:
        p, suspended = catalog.set_promotion_status(s, promotion_id, status)
        if decision is not None:
            subject = decisions.promotion_subject(promotion_id)
            decisions.record(s, actor=decisions.CLI, action=decision, subject=subject)
        return {**_promotion_json(p), "suspended_campaigns": suspended}

    data = write(ctx, run)
    lines = [f"promotion {promotion_id}: {data['status']}"]
    if data["suspended_campaigns"]:
        ids = ", ".join(map(str, data["suspended_campaigns"]))
        lines.append(f"suspended campaign {ids}: it will not be sent")
    emit(ctx, data, lines)


def _promotion_status_command(name: str, status: PromotionStatus, doc: str) -> None:
    """``relay promotion approve|reject|cancel ID``: one command per status."""

    @promotion.command(name, help=doc)
    @common
    @click.argument("promotion_id", type=ID)
    @pass_ctx
    @handled
    def command(ctx: Context, promotion_id: int) -> None:
        moderation = f"promotion.{name}"
        decision = decisions.Action(moderation) if moderation in set(decisions.Action) else None
        _set_promotion(ctx, promotion_id, status, decision)


_ENDS = (
    "a campaign showing it that has not started is suspended; refused while such a"
    " campaign is sending."
)
_promotion_status_command(
    "approve", PromotionStatus.APPROVED, "Approve a pending promotion: campaigns may show it."
)
_promotion_status_command("reject", PromotionStatus.REJECTED, f"Reject a promotion: {_ENDS}")
_promotion_status_command("cancel", PromotionStatus.CANCELLED, f"Cancel a promotion: {_ENDS}")


@promotion.command("list")
@common
@click.option("--product", "product_id", type=ID)
@click.option(
    "--eligible-for",
    "start_on",
    type=TEXT,
    callback=iso_date,
    metavar="DATE",
    help="Only those a campaign on --product starting DATE may show.",
)
@pass_ctx
@handled
def promotion_list(ctx: Context, product_id: int | None, start_on: date | None) -> None:
    """Promotions; with --product and --eligible-for, the ones a campaign may choose."""
    if start_on is not None and product_id is None:
        raise click.UsageError("--eligible-for needs --product")

    def run(s: Session) -> list[Promotion]:
        if start_on is not None and product_id is not None:
            return catalog.eligible_promotions(s, product_id, start_on, clock.now())
        return catalog.promotions(s, product_id)

    found = read(ctx, run)
    emit(
        ctx,
        [_promotion_json(p) for p in found],
        [_promotion_line(p) for p in found] or ["no promotions"],
    )


# --- shopping events -----------------------------------------------------------------------


@main.group()
@common
def event() -> None:
    """Shopping events that campaigns may be themed on."""


@event.command("add")
@common
@click.option("--name", type=NAME, required=True)
@click.option(
    "--start",
    "starts_on",
    type=TEXT,
    callback=iso_date,
    required=True,
    metavar="DATE",
    help="Its first day (YYYY-MM-DD, UTC), included.",
)
@click.option(
    "--end",
    "ends_on",
    type=TEXT,
    callback=iso_date,
    required=True,
    metavar="DATE",
    help="Its last day (YYYY-MM-DD, UTC), included (unlike a promotion's --end).",
)
@pass_ctx
@handled
def event_add(ctx: Context, name: str, starts_on: date, ends_on: date) -> None:
    """Add a shopping event (dates in UTC, both inclusive: --start 2026-11-27
    --end 2026-11-30 is four days, 30 November included)."""

    def run(s: Session) -> dict[str, Any]:
        return _event_json(catalog.add_event(s, name=name, starts_on=starts_on, ends_on=ends_on))

    data = write(ctx, run)
    emit(ctx, data, [f"event {data['event_id']} ({data['name']})"])


@event.command("list")
@common
@pass_ctx
@handled
def event_list(ctx: Context) -> None:
    """Shopping events."""
    data = read(ctx, lambda s: [_event_json(e) for e in catalog.events(s)])
    emit(
        ctx,
        data,
        [f"event {d['event_id']}: {d['name']}, {d['starts_on']} to {d['ends_on']}" for d in data]
        or ["no shopping events"],
    )
