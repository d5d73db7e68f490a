"""Brand email campaigns: ``relay campaign``, from the draft to the dispatcher.

Every change goes through the database's writer (``write``), whose transactions
are the ones the dispatcher's take turns with, so a command and a running
relay never half-see each other's work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import click
from sqlmodel import Session

from relay.campaigns import calendar as calendar_mod
from relay.campaigns import lifecycle, report
from relay.campaigns.models import CampaignKind, CampaignStatus
from relay.cli.base import (
    ID,
    TEXT,
    Context,
    Name,
    common,
    emit,
    handled,
    iso_date,
    main,
    opened,
    pass_ctx,
    plural,
    read,
    when,
    write,
)
from relay.core import clock
from relay.storage import decisions
from relay.storage.archive import Archive

COLOURS = {"free": "green", "conflict": "red", "unavailable": "bright_black"}

SUBJECT = Name(max_length=lifecycle.MAX_SUBJECT, address_ok=True)
"""A campaign subject: its own length; addresses are refused by the campaign rules, in
their words."""


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
            callback=iso_date,
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

    data = write(ctx, run)
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

    data = write(ctx, run)
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

    data = write(ctx, run)
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
        decisions.record(
            s,
            actor=decisions.CLI,
            action=decisions.Action(f"campaign.{decision}"),
            subject=decisions.campaign_subject(campaign_id),
            detail=reason,
        )
        return _show(s, campaign_id)

    data = write(ctx, run)
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

    data = write(ctx, run)
    withdrawn = f"  {plural(data['withdrawn_now'], 'message')} withdrawn"
    emit(ctx, data, [*_campaign_lines(data)[:1], withdrawn])


@campaign.command("show")
@common
@click.argument("campaign_id", type=ID)
@pass_ctx
@handled
def campaign_show(ctx: Context, campaign_id: int) -> None:
    """A campaign, its status history, moderation's decisions and what became of
    its messages."""

    def run(s: Session) -> dict[str, Any]:
        shown = _show(s, campaign_id)
        made = decisions.listed(s, decisions.campaign_subject(campaign_id))
        return {**shown, "decisions": made}

    data = read(ctx, run)
    lines = _campaign_lines(data)
    lines += [f"  decision: {decisions.describe(d)}" for d in data["decisions"]]
    emit(ctx, data, lines)


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

    data = read(ctx, run)
    emit(ctx, data, [line for d in data for line in _campaign_lines(d)[:1]] or ["no campaigns"])


@campaign.command("calendar")
@common
@click.option("--brand", "brand_id", type=ID, required=True)
@click.option(
    "--from", "first", type=TEXT, callback=iso_date, metavar="DATE", help="Default: today."
)
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
    found = read(
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
    with opened(ctx) as db:
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
