"""The brand-campaign commands: ``relay brand|follower|product|promotion|event|campaign``.

Registered on ``relay.cli.base.main`` (which imports this module last).  Every
change goes through the database's writer (``db.write``), whose transactions
are the ones the dispatcher's take turns with, so a command and a running
relay never half-see each other's work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import click
from sqlmodel import Session

from relay.campaigns import calendar as calendar_mod
from relay.campaigns import catalog, lifecycle, report
from relay.campaigns.models import (
    Brand,
    CampaignKind,
    CampaignStatus,
    Product,
    Promotion,
    PromotionKind,
    PromotionStatus,
    ShoppingEvent,
)
from relay.cli.base import (
    EMAIL,
    ID,
    NAME,
    ON_OFF,
    TEXT,
    Context,
    Name,
    common,
    emit,
    handled,
    main,
    on_off,
    pass_ctx,
    plural,
    when,
)
from relay.core import clock
from relay.storage.archive import Archive
from relay.storage.db import Database

P = ParamSpec("P")
T = TypeVar("T")

COLOURS = {"free": "green", "conflict": "red", "unavailable": "bright_black"}

SUBJECT = Name(max_length=lifecycle.MAX_SUBJECT, address_ok=True)
"""A campaign subject: its own length; addresses are refused by the campaign rules, in
their words."""


@contextmanager
def _db(ctx: Context) -> Iterator[Database]:
    db = ctx.database()
    try:
        yield db
    finally:
        db.dispose()


def _write(ctx: Context, fn: Callable[Concatenate[Session, P], T], *a: P.args, **k: P.kwargs) -> T:
    with _db(ctx) as db:
        return db.write(fn, *a, **k)


def _read(ctx: Context, fn: Callable[Concatenate[Session, P], T], *a: P.args, **k: P.kwargs) -> T:
    with _db(ctx) as db:
        return db.call(fn, *a, **k)


def _date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


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

    data = _write(ctx, run)
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

    data = _write(ctx, run)
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

    data = _read(ctx, run)
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

    data = _write(ctx, run)
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

    data = _write(ctx, run)
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

    data = _read(ctx, run)
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

    data = _write(ctx, run)
    emit(ctx, data, [f"product {data['product_id']} ({data['sku']}): {data['title']}"])


@product.command("list")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@pass_ctx
@handled
def product_list(ctx: Context, brand_id: int) -> None:
    """A brand's products."""
    data = _read(ctx, lambda s: [_product_json(p) for p in catalog.products(s, brand_id)])
    emit(
        ctx,
        data,
        [f"product {d['product_id']} ({d['sku']}): {d['title']} {d['price']}" for d in data]
        or ["no products"],
    )


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

    data = _write(ctx, run)
    emit(ctx, data, [f"promotion {data['promotion_id']}: {data['status']}"])


def _set_promotion(ctx: Context, promotion_id: int, status: PromotionStatus) -> None:
    def run(s: Session) -> dict[str, Any]:
        p, suspended = catalog.set_promotion_status(s, promotion_id, status)
        return {**_promotion_json(p), "suspended_campaigns": suspended}

    data = _write(ctx, run)
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
        _set_promotion(ctx, promotion_id, status)


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
    callback=_date,
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

    found = _read(ctx, run)
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
    callback=_date,
    required=True,
    metavar="DATE",
    help="Its first day (YYYY-MM-DD, UTC), included.",
)
@click.option(
    "--end",
    "ends_on",
    type=TEXT,
    callback=_date,
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

    data = _write(ctx, run)
    emit(ctx, data, [f"event {data['event_id']} ({data['name']})"])


@event.command("list")
@common
@pass_ctx
@handled
def event_list(ctx: Context) -> None:
    """Shopping events."""
    data = _read(ctx, lambda s: [_event_json(e) for e in catalog.events(s)])
    emit(
        ctx,
        data,
        [f"event {d['event_id']}: {d['name']}, {d['starts_on']} to {d['ends_on']}" for d in data]
        or ["no shopping events"],
    )


# --- campaigns ----------------------------------------------------------------------------


@main.group()
@common
def campaign() -> None:
    """Brand email campaigns: create, review, schedule, follow."""


def _draft_options(*, create: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of ``campaign create`` (where the campaign's essentials are
    required) and of ``campaign edit`` (where any of them may change)."""
    return lambda fn: _with_draft_options(fn, create=create)


def _with_draft_options(fn: Callable[..., Any], *, create: bool) -> Callable[..., Any]:
    content = (
        "The campaign's text; this or --content-file is required."
        if create
        else "The campaign's text (or --content-file)."
    )
    start = (
        "The first day of the 5-day delivery window (YYYY-MM-DD, UTC; delivery begins"
        " 00:00 UTC). At least 72 hours away, as moderation takes that long; within the"
        " event's dates and the promotion's period, if any."
    )
    options = [
        click.option("--kind", type=click.Choice([k.value for k in CampaignKind]), required=create),
        click.option(
            "--product", "main_product_id", type=ID, required=create, help="The main product."
        ),
        click.option(
            "--also",
            "extra_product_ids",
            type=ID,
            multiple=True,
            help="Another featured product (repeat, up to 4).",
        ),
        click.option("--promotion", "promotion_id", type=ID, help="A promotion on the product."),
        click.option("--event", "event_id", type=ID, help="The shopping event it is themed on."),
        click.option("--subject", type=SUBJECT, required=create),
        click.option("--content", type=TEXT, help=content),
        click.option(
            "--content-file", type=click.File("r", encoding="utf-8"), help="Read the text from it."
        ),
        click.option(
            "--start",
            "start_on",
            type=TEXT,
            callback=_date,
            metavar="DATE",
            required=create,
            help=start,
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _draft(
    kind: str | None,
    main_product_id: int | None,
    extra_product_ids: tuple[int, ...],
    promotion_id: int | None,
    event_id: int | None,
    subject: str | None,
    content: str | None,
    content_file: Any,
    start_on: date | None,
) -> lifecycle.Draft:
    if content is not None and content_file is not None:
        raise click.UsageError("give --content or --content-file, not both")
    if content_file is not None:
        content = content_file.read()
    return lifecycle.Draft(
        kind=CampaignKind(kind) if kind else None,
        main_product_id=main_product_id,
        extra_product_ids=list(extra_product_ids) if extra_product_ids else None,
        promotion_id=promotion_id,
        event_id=event_id,
        subject=subject,
        content=content,
        start_on=start_on,
    )


def _show(s: Session, campaign_id: int, *, with_history: bool = True) -> dict[str, Any]:
    c = lifecycle.get_campaign(s, campaign_id)
    return {
        **lifecycle.describe(s, c, with_history=with_history),
        "report": report.campaign_report(s, campaign_id),
    }


def _campaign_lines(d: dict[str, Any]) -> list[str]:
    extras = ", ".join(map(str, d["extra_product_ids"]))
    lines = [
        f"campaign {d['campaign_id']} ({d['kind']}) of brand {d['brand_id']}: {d['status']}"
        + (f" ({d['status_reason']})" if d["status_reason"] else ""),
        f"  subject: {d['subject']}",
        f"  start {d['start_on']}: delivery {d['window']['start']} to {d['window']['end']}",
        f"  main product {d['main_product_id']}"
        + (f", also {extras}" if extras else "")
        + (f", promotion {d['promotion_id']}" if d["promotion_id"] else "")
        + (f", event {d['event_id']}" if d["event_id"] else ""),
    ]
    if "report" in d:
        lines.append("  messages: " + report.describe_report(d["report"]))
    if "history" in d:
        lines += [f"  {h['at']}  {h['status']}  {h['reason']}" for h in d["history"]]
    return lines


@campaign.command("create")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@_draft_options(create=True)
@pass_ctx
@handled
def campaign_create(ctx: Context, /, brand_id: int, **options: Any) -> None:
    """Create a draft; every rule is checked now (submit checks them again).

    Dates are UTC.  The start date must be at least 72 hours away (moderation
    takes that long), when the campaign is created and again when it is
    submitted.
    """
    draft = _draft(**options)
    missing = [
        name
        for name, value in (
            ("--kind", draft.kind),
            ("--product", draft.main_product_id),
            ("--subject", draft.subject),
            ("--content", draft.content),
            ("--start", draft.start_on),
        )
        if value is None
    ]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}")

    def run(s: Session) -> dict[str, Any]:
        c = lifecycle.create(s, brand_id, draft, now=clock.now())
        assert c.id is not None
        return _show(s, c.id)

    data = _write(ctx, run)
    emit(ctx, data, _campaign_lines(data)[:1])


@campaign.command("edit")
@common
@click.argument("campaign_id", type=ID)
@_draft_options(create=False)
@click.option("--no-promotion", is_flag=True, help="Remove the promotion.")
@click.option("--no-event", is_flag=True, help="Remove the event theme.")
@pass_ctx
@handled
def campaign_edit(
    ctx: Context, /, campaign_id: int, no_promotion: bool, no_event: bool, **options: Any
) -> None:
    """Change a draft (or a campaign in review, which goes back to draft)."""
    draft = _draft(**options)
    draft.clear = {n for n, on in (("promotion", no_promotion), ("event", no_event)) if on}

    def run(s: Session) -> dict[str, Any]:
        lifecycle.edit(s, campaign_id, draft, now=clock.now())
        return _show(s, campaign_id)

    data = _write(ctx, run)
    emit(ctx, data, _campaign_lines(data)[:1])


@campaign.command("submit")
@common
@click.argument("campaign_id", type=ID)
@pass_ctx
@handled
def campaign_submit(ctx: Context, campaign_id: int) -> None:
    """Send a draft to moderation (at least 72 hours before its start date)."""

    def run(s: Session) -> dict[str, Any]:
        lifecycle.submit(s, campaign_id, now=clock.now())
        return _show(s, campaign_id)

    data = _write(ctx, run)
    emit(ctx, data, _campaign_lines(data)[:1])


@campaign.command("review")
@common
@click.argument("campaign_id", type=ID)
@click.option("--approve", "decision", flag_value="approve", help="Approve it.")
@click.option("--reject", "decision", flag_value="reject", help="Reject it (final).")
@click.option("--reason", type=TEXT, default="", help="Required with --reject: the brand sees it.")
@pass_ctx
@handled
def campaign_review(ctx: Context, campaign_id: int, decision: str | None, reason: str) -> None:
    """Moderation's decision on a campaign in review."""
    if decision is None:
        raise click.UsageError("give --approve or --reject")

    def run(s: Session) -> dict[str, Any]:
        lifecycle.review(
            s, campaign_id, approve=decision == "approve", reason=reason, now=clock.now()
        )
        return _show(s, campaign_id)

    data = _write(ctx, run)
    emit(ctx, data, _campaign_lines(data)[:1])


@campaign.command("cancel")
@common
@click.argument("campaign_id", type=ID)
@pass_ctx
@handled
def campaign_cancel(ctx: Context, campaign_id: int) -> None:
    """The brand withdraws its campaign: what has not been sent will not be."""

    def run(s: Session) -> dict[str, Any]:
        _c, withdrawn = lifecycle.cancel(s, campaign_id)
        return {**_show(s, campaign_id), "withdrawn_now": withdrawn}

    data = _write(ctx, run)
    withdrawn = f"  {plural(data['withdrawn_now'], 'message')} withdrawn"
    emit(ctx, data, [*_campaign_lines(data)[:1], withdrawn])


@campaign.command("show")
@common
@click.argument("campaign_id", type=ID)
@pass_ctx
@handled
def campaign_show(ctx: Context, campaign_id: int) -> None:
    """A campaign, its status history and what became of its messages."""
    data = _read(ctx, _show, campaign_id)
    emit(ctx, data, _campaign_lines(data))


@campaign.command("list")
@common
@click.option("--brand", "brand_id", type=ID)
@click.option("--status", type=click.Choice([s.value for s in CampaignStatus]))
@pass_ctx
@handled
def campaign_list(ctx: Context, brand_id: int | None, status: str | None) -> None:
    """Campaigns by start date."""

    def run(s: Session) -> list[dict[str, Any]]:
        found = lifecycle.list_campaigns(
            s, brand_id=brand_id, status=CampaignStatus(status) if status else None
        )
        return [_show(s, c.id, with_history=False) for c in found if c.id is not None]

    data = _read(ctx, run)
    emit(ctx, data, [line for d in data for line in _campaign_lines(d)[:1]] or ["no campaigns"])


@campaign.command("calendar")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@click.option("--from", "first", type=TEXT, callback=_date, metavar="DATE", help="Default: today.")
@click.option(
    "--days",
    type=click.IntRange(1, calendar_mod.MAX_DAYS),
    metavar="N",
    default=31,
    show_default=True,
    help=f"Days to show, 1 to {calendar_mod.MAX_DAYS}.",
)
@click.option("--campaign", "campaign_id", type=ID, help="Apply its event and promotion.")
@click.option("--event", "event_id", type=ID, help="Apply this event's dates.")
@click.option("--promotion", "promotion_id", type=ID, help="Apply this promotion's period.")
@pass_ctx
@handled
def campaign_calendar(
    ctx: Context,
    brand_id: int,
    first: date | None,
    days: int,
    campaign_id: int | None,
    event_id: int | None,
    promotion_id: int | None,
) -> None:
    """The date picker: which start dates may be chosen, and which collide with
    the brand's other campaigns under the 7-day rule (and for how many followers)."""
    now = clock.now()
    start = first or now.date()
    found = _read(
        ctx,
        calendar_mod.calendar,
        brand_id,
        start,
        days,
        now=now,
        campaign_id=campaign_id,
        event_id=event_id,
        promotion_id=promotion_id,
    )
    emit(ctx, [d.as_json() for d in found], _calendar_lines(found))


def _calendar_lines(found: list[calendar_mod.Day]) -> list[str]:
    """A month grid with coloured days (colour only on a terminal), a legend, and
    one line per date that is not plainly free."""
    lines: list[str] = []
    first = found[0].day
    monday = first - timedelta(days=first.weekday())
    by_day = {d.day: d for d in found}
    lines.append(" ".join(f"{n:>5} " for n in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")))
    day = monday
    while day <= found[-1].day:
        cells = []
        for _ in range(7):
            d = by_day.get(day)
            if d is None:
                cells.append(" " * 6)
            else:
                mark = {"free": " ", "conflict": "!", "unavailable": "-"}[d.colour]
                text = f"{day:%m-%d}" if day.day == 1 or day == first else f"{day.day:>5}"
                cells.append(click.style(f"{text:>5}", fg=COLOURS[d.colour]) + mark)
            day += timedelta(days=1)
        lines.append(" ".join(cells).rstrip())
    lines.append(
        f"{click.style('green', fg='green')}: free   {click.style('red !', fg='red')}: collides"
        f" with another campaign (7-day rule)   {click.style('grey -', fg='bright_black')}:"
        " cannot be chosen"
    )
    for run in _runs(found):
        d = run[0]
        days = f"{d.day}" if len(run) == 1 else f"{d.day} to {run[-1].day}"
        if d.colour == "unavailable":
            lines.append(f"{days}: cannot be chosen: {'; '.join(d.reasons)}")
        elif d.colour == "conflict":
            others = ", ".join(
                f"campaign {c.campaign_id} (starts {c.start_on}, {plural(c.followers, 'follower')})"
                for c in d.collisions
            )
            lines.append(
                f"{days}: collides with {others}:"
                f" {plural(d.colliding_followers, 'follower')} would get only one of them"
            )
    return lines


def _runs(found: list[calendar_mod.Day]) -> list[list[calendar_mod.Day]]:
    """Consecutive days that say the same thing, together."""
    runs: list[list[calendar_mod.Day]] = []
    for d in found:
        if runs and _same(runs[-1][0], d):
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


def _same(a: calendar_mod.Day, b: calendar_mod.Day) -> bool:
    if a.colour != b.colour or a.reasons != b.reasons:
        return False
    return a.colour != "conflict" or [c.campaign_id for c in a.collisions] == [
        c.campaign_id for c in b.collisions
    ]


@campaign.command("dispatch")
@common
@click.option(
    "--at",
    type=TEXT,
    callback=when,
    metavar="DATETIME",
    help="Run the pass as of this time (UTC unless it says), to rehearse a schedule"
    " on a test set-up: what is due then is queued now, for real.",
)
@pass_ctx
@handled
def campaign_dispatch(ctx: Context, at: datetime | None) -> None:
    """One dispatcher pass, as `relay serve` runs every campaigns.poll_interval:
    start due campaigns and queue the messages due; a running relay delivers them.

    Warning: this really sends.  The messages it queues go to the followers'
    real addresses; with --at, those of a later time go out now.  Only rehearse
    on a test set-up.
    """
    from relay.campaigns.dispatch import Dispatcher
    from relay.campaigns.render import Renderer

    config = ctx.config
    links = config.campaigns.unsubscribe
    if links.url is None and links.address is not None and links.address[1] == 0:
        raise click.UsageError(
            "campaigns.unsubscribe.listen has port 0, so the unsubscribe links would lead"
            " nowhere: set campaigns.unsubscribe.url (or a fixed port)"
        )
    when = at or clock.now()
    with _db(ctx) as db:
        dispatcher = Dispatcher(config, db, Archive(config.archive.path), renderer=Renderer(config))
        done = asyncio.run(dispatcher.pass_once(when))
    data = {"at": when.isoformat(), **done.as_json()}
    lines = [f"pass at {when:%Y-%m-%d %H:%M:%S} UTC"]
    for what in ("scheduled", "started", "suspended", "completed"):
        if data[what]:
            lines.append(f"  {what}: campaign {', '.join(map(str, data[what]))}")
    counts = ", ".join(f"{n} {what}" for what, n in data["messages"].items())
    lines.append(f"  messages: {counts or 'none due'}")
    emit(ctx, data, lines)
