"""A brand's pages: its campaigns (list, form with the start-date calendar,
page with history, actions and report), followers, products and promotions.

A brand user sees its own brand only (``Account.subject_id``): a campaign of
another brand is answered with the same 404 page as an id that does not exist,
as the API answers a brand key.  Every change goes through the functions the
API and the CLI call (``relay.campaigns.lifecycle``), so every rule is checked
there and a refusal is the rules' own, said in the reader's language
(``wording``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from relay.campaigns import calendar, catalog, lifecycle, report, rules
from relay.campaigns.catalog import CampaignError
from relay.campaigns.models import (
    FINAL_STATUSES,
    Campaign,
    CampaignKind,
    CampaignStatus,
    Product,
    Promotion,
)
from relay.console import month, wording
from relay.console.accounts import ConsoleRole
from relay.console.i18n import Formats
from relay.console.web import Refusal, Visitor, db_of, need, posted, redirect, render, visitor
from relay.core import clock

T = TypeVar("T")
router = APIRouter(include_in_schema=False)
Who = Depends(visitor)

EDITABLE = (CampaignStatus.DRAFT, CampaignStatus.IN_REVIEW)
REPORTED = (CampaignStatus.SENDING, CampaignStatus.COMPLETED)


def _brand(request: Request, who: Visitor) -> int:
    """The signed-in brand's id (others: sign in, or 403)."""
    account = need(request, who, lambda a: a.role is ConsoleRole.BRAND)
    assert account.subject_id is not None
    return account.subject_id


def _no_such_page() -> HTTPException:
    """What an id of another brand gets: exactly what an unknown page gets."""
    return HTTPException(404)


def _read(request: Request, who: Visitor, fn: Callable[..., T], *args: Any) -> T:
    """``fn(session, *args)``; a brand id that names no brand (a user made for a
    brand that was never added) is a page that says so, not a failure."""
    try:
        return db_of(request).call(fn, *args)
    except CampaignError:
        raise Refusal(
            404, who._("Your account's brand does not exist: ask the marketplace to check it.")
        ) from None


def _own_campaign(s: Session, brand_id: int, campaign_id: int) -> Campaign:
    campaign = s.get(Campaign, campaign_id)
    if campaign is None or campaign.brand_id != brand_id:
        raise _no_such_page()
    return campaign


def _int(value: Any) -> int | None:
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and 0 < int(text) < 2**63:
        return int(text)
    return None


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        return None


@dataclass(slots=True)
class CampaignForm:
    """What the form holds, read leniently (the lifecycle checks it)."""

    kind: CampaignKind | None = None
    main_product_id: int | None = None
    extra_product_ids: list[int] = field(default_factory=list)
    promotion_id: int | None = None
    event_id: int | None = None
    subject: str = ""
    content: str = ""
    start_on: date | None = None

    @classmethod
    def read(cls, form: FormData) -> CampaignForm:
        kind = form.get("kind")
        extras = [_int(v) for v in form.getlist("extra_product_ids")]
        return cls(
            kind=CampaignKind(kind) if kind in {k.value for k in CampaignKind} else None,
            main_product_id=_int(form.get("main_product_id")),
            extra_product_ids=[e for e in extras if e is not None][:20],
            promotion_id=_int(form.get("promotion_id")),
            event_id=_int(form.get("event_id")),
            subject=str(form.get("subject", ""))[: lifecycle.MAX_SUBJECT * 2],
            content=str(form.get("content", ""))[: lifecycle.MAX_CONTENT * 2],
            start_on=_day(form.get("start_on")),
        )

    @classmethod
    def of(cls, s: Session, campaign: Campaign) -> CampaignForm:
        assert campaign.id is not None
        return cls(
            kind=campaign.kind,
            main_product_id=campaign.main_product_id,
            extra_product_ids=[
                p.id for p in lifecycle.extra_products(s, campaign.id) if p.id is not None
            ],
            promotion_id=campaign.promotion_id,
            event_id=campaign.event_id,
            subject=campaign.subject,
            content=campaign.content,
            start_on=campaign.start_on,
        )

    def draft(self) -> lifecycle.Draft:
        draft = lifecycle.Draft(
            kind=self.kind,
            main_product_id=self.main_product_id,
            extra_product_ids=self.extra_product_ids,
            promotion_id=self.promotion_id,
            event_id=self.event_id,
            subject=self.subject,
            content=self.content,
            start_on=self.start_on,
        )
        draft.clear = {
            name
            for name, value in (("promotion", self.promotion_id), ("event", self.event_id))
            if value is None
        }
        return draft


@dataclass(slots=True)
class PromotionChoice:
    promotion: Promotion
    product: Product
    problems: list[str]
    """Why it cannot be chosen (translated); empty: it is offered."""


def _promotion_choices(
    s: Session, brand_id: int, state: CampaignForm, now: datetime, who: Visitor, fmt: Formats
) -> list[PromotionChoice]:
    """The brand's promotions, eligible ones first: with a start date, those
    ``catalog.eligible_promotions`` offers; before one is chosen, those the rules
    do not refuse whatever the date (``rules.standing_problems``)."""
    products = {p.id: p for p in catalog.products(s, brand_id)}
    main = state.main_product_id if state.main_product_id in products else None
    eligible: set[int | None] = set()
    if main is not None and state.start_on is not None:
        eligible = {p.id for p in catalog.eligible_promotions(s, main, state.start_on, now)}
    choices = []
    for p in catalog.promotions(s):
        if p.product_id not in products:
            continue
        if main is None:
            problems = [who._("choose the main product first")]
        elif state.start_on is not None:
            found = rules.promotion_problems(
                p, main_product_id=main, start_on=state.start_on, now=now
            )
            period = rules.promotion_period_problem(state.start_on, p)
            found += [period] if period else []
            problems = [] if p.id in eligible else [wording.sentence(x, who._, fmt) for x in found]
        else:
            found = rules.standing_problems(p, main_product_id=main, now=now)
            problems = [wording.sentence(x, who._, fmt) for x in found]
        choices.append(PromotionChoice(p, products[p.product_id], problems))
    choices.sort(key=lambda c: (bool(c.problems), c.promotion.id or 0))
    return choices


def _form_page(
    request: Request,
    who: Visitor,
    brand_id: int,
    state: CampaignForm,
    shown: date | None,
    *,
    campaign: Campaign | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    """The campaign form with its calendar (new or edit)."""
    fmt = _fmt(who)
    now = clock.now()

    def read(s: Session) -> dict[str, Any]:
        products = catalog.products(s, brand_id)
        choices = _promotion_choices(s, brand_id, state, now, who, fmt)
        promotion_id = state.promotion_id
        if promotion_id is not None and all(c.promotion.id != promotion_id for c in choices):
            promotion_id = None  # not the brand's: the calendar ignores it
        events = catalog.events(s)
        first = shown or (state.start_on or rules.earliest_start(now)).replace(day=1)
        days = month.load(
            s,
            brand_id,
            first,
            now=now,
            campaign_id=campaign.id if campaign is not None else None,
            event_id=state.event_id if state.event_id in {e.id for e in events} else None,
            promotion_id=promotion_id,
        )
        return {
            "products": products,
            "choices": choices,
            "events": events,
            "month": month.lay_out(days, first, state.start_on, who._, fmt),
        }

    data = _read(request, who, read)
    return render(
        request,
        who,
        "brand/campaign_form.html",
        status=status,
        state=state,
        campaign=campaign,
        errors=errors or [],
        kinds=wording.KIND,
        earliest=rules.earliest_start(now),
        window_days=rules.WINDOW_DAYS,
        **data,
    )


def _fmt(who: Visitor) -> Formats:
    return Formats(who.lang)


# --- the campaigns ----------------------------------------------------------------


@router.get("/brand/campaigns")
def campaigns(request: Request, who: Visitor = Who) -> Response:
    brand_id = _brand(request, who)

    def read(s: Session) -> dict[str, Any]:
        brand = catalog.get_brand(s, brand_id)
        return {"brand": brand, "campaigns": lifecycle.list_campaigns(s, brand_id=brand_id)}

    data = _read(request, who, read)
    return render(request, who, "brand/campaigns.html", statuses=wording.STATUS, **data)


@router.get("/brand/campaigns/new")
def new_campaign(request: Request, who: Visitor = Who, month_shown: str = "") -> Response:
    brand_id = _brand(request, who)
    return _form_page(request, who, brand_id, CampaignForm(), month.parse_month(month_shown))


@router.post("/brand/campaigns/new")
async def create_campaign(request: Request, who: Visitor = Who) -> Response:
    brand_id = _brand(request, who)
    form = await posted(request, who)
    state = CampaignForm.read(form)
    shown = month.parse_month(str(form.get("month") or form.get("shown") or ""))
    if form.get("action") != "save":
        return await run_in_threadpool(_form_page, request, who, brand_id, state, shown)

    def create(s: Session) -> int:
        made = lifecycle.create(s, brand_id, state.draft(), now=clock.now())
        assert made.id is not None
        return made.id

    try:
        campaign_id = await run_in_threadpool(db_of(request).write, create)
    except CampaignError as exc:
        errors = wording.refusal(str(exc), who._, _fmt(who))
        return await run_in_threadpool(
            lambda: _form_page(request, who, brand_id, state, shown, errors=errors, status=422)
        )
    return redirect(f"/brand/campaigns/{campaign_id}?done=created")


@router.get("/brand/campaigns/{campaign_id}/edit")
def edit_page(request: Request, campaign_id: int, who: Visitor = Who) -> Response:
    brand_id = _brand(request, who)

    def read(s: Session) -> tuple[Campaign, CampaignForm]:
        campaign = _own_campaign(s, brand_id, campaign_id)
        return campaign, CampaignForm.of(s, campaign)

    campaign, state = db_of(request).call(read)
    return _form_page(request, who, brand_id, state, None, campaign=campaign)


@router.post("/brand/campaigns/{campaign_id}/edit")
async def edit_campaign(request: Request, campaign_id: int, who: Visitor = Who) -> Response:
    brand_id = _brand(request, who)
    db = db_of(request)
    campaign = await run_in_threadpool(db.call, _own_campaign, brand_id, campaign_id)
    form = await posted(request, who)
    state = CampaignForm.read(form)
    shown = month.parse_month(str(form.get("month") or form.get("shown") or ""))

    def page(errors: list[str] | None = None, status: int = 200) -> Response:
        return _form_page(
            request, who, brand_id, state, shown, campaign=campaign, errors=errors, status=status
        )

    if form.get("action") != "save":
        return await run_in_threadpool(page)

    def edit(s: Session) -> None:
        _own_campaign(s, brand_id, campaign_id)
        lifecycle.edit(s, campaign_id, state.draft(), now=clock.now())

    try:
        await run_in_threadpool(db.write, edit)
    except CampaignError as exc:
        errors = wording.refusal(str(exc), who._, _fmt(who))
        return await run_in_threadpool(page, errors, 422)
    return redirect(f"/brand/campaigns/{campaign_id}?done=saved")


@dataclass(slots=True)
class Shown:
    """A campaign as its page shows it."""

    campaign: Campaign
    described: dict[str, Any]
    figures: dict[str, Any]
    """``report.campaign_report``."""
    main: Product
    extras: list[Product]
    promotion: Promotion | None
    event_name: str | None
    days: list[report.DayCount]
    collisions: list[Any]
    colliding_followers: int


def _shown(s: Session, brand_id: int, campaign_id: int) -> Shown:
    campaign = _own_campaign(s, brand_id, campaign_id)
    described = lifecycle.describe(s, campaign)
    window_start = datetime.fromisoformat(described["window"]["start"]).date()
    window_end = datetime.fromisoformat(described["window"]["end"])
    partial_day = 1 if window_end.time() != time(0) else 0
    span = max(1, (window_end.date() - window_start).days + partial_day)
    collisions: list[Any] = []
    followers = 0
    if campaign.status not in FINAL_STATUSES and campaign.status not in REPORTED:
        today = calendar.calendar(
            s, brand_id, campaign.start_on, 1, now=clock.now(), campaign_id=campaign_id
        )[0]
        collisions, followers = today.collisions, today.colliding_followers
    promotion = s.get(Promotion, campaign.promotion_id) if campaign.promotion_id else None
    event = catalog.get_event(s, campaign.event_id) if campaign.event_id else None
    return Shown(
        campaign=campaign,
        described=described,
        figures=report.campaign_report(s, campaign_id),
        main=catalog.get_product(s, campaign.main_product_id),
        extras=lifecycle.extra_products(s, campaign_id),
        promotion=promotion,
        event_name=event.name if event else None,
        days=report.per_day(s, campaign_id, window_start, min(span, rules.WINDOW_DAYS + 1)),
        collisions=collisions,
        colliding_followers=followers,
    )


@router.get("/brand/campaigns/{campaign_id}")
def campaign_page(
    request: Request, campaign_id: int, who: Visitor = Who, done: str = ""
) -> Response:
    brand_id = _brand(request, who)
    shown = db_of(request).call(_shown, brand_id, campaign_id)
    return _campaign_page(request, who, shown, done=done)


def _campaign_page(
    request: Request, who: Visitor, shown: Shown, *, done: str = "", errors: list[str] | None = None
) -> Response:
    history = [
        {
            "status": CampaignStatus(h["status"]),
            "at": datetime.fromisoformat(h["at"]),
            "reason": h["reason"],
        }
        for h in shown.described["history"]
    ]
    c = shown.campaign
    return render(
        request,
        who,
        "brand/campaign.html",
        status=422 if errors else 200,
        shown=shown,
        c=c,
        history=history,
        statuses=wording.STATUS,
        kinds=wording.KIND,
        reasons=wording.HISTORY_REASON,
        done=done if done in ("created", "saved", "submitted", "cancelled") else "",
        errors=errors or [],
        editable=c.status in EDITABLE,
        submittable=c.status is CampaignStatus.DRAFT,
        cancellable=c.status not in FINAL_STATUSES,
        reported=c.status in REPORTED or shown.figures["planned"] > 0,
        peak=max([d.sent + d.not_sent + d.pending for d in shown.days] + [1]),
    )


async def _act(request: Request, who: Visitor, campaign_id: int, action: str) -> Response:
    """Submit or cancel: the lifecycle's function, the same as the API's."""
    brand_id = _brand(request, who)
    await posted(request, who)
    db = db_of(request)

    def run(s: Session) -> None:
        _own_campaign(s, brand_id, campaign_id)
        if action == "submitted":
            lifecycle.submit(s, campaign_id, now=clock.now())
        else:
            lifecycle.cancel(s, campaign_id)

    try:
        await run_in_threadpool(db.write, run)
    except CampaignError as exc:
        errors = wording.refusal(str(exc), who._, _fmt(who))
        shown = await run_in_threadpool(db.call, _shown, brand_id, campaign_id)
        return _campaign_page(request, who, shown, errors=errors)
    return redirect(f"/brand/campaigns/{campaign_id}?done={action}")


@router.post("/brand/campaigns/{campaign_id}/submit")
async def submit_campaign(request: Request, campaign_id: int, who: Visitor = Who) -> Response:
    return await _act(request, who, campaign_id, "submitted")


@router.post("/brand/campaigns/{campaign_id}/cancel")
async def cancel_campaign(request: Request, campaign_id: int, who: Visitor = Who) -> Response:
    return await _act(request, who, campaign_id, "cancelled")


# --- followers, products, promotions --------------------------------------------------


@router.get("/brand/followers")
def followers(request: Request, who: Visitor = Who) -> Response:
    """Without their addresses: the API hides them from brand keys too."""
    brand_id = _brand(request, who)

    def read(s: Session) -> list[dict[str, Any]]:
        return [
            {
                "name": buyer.name,
                "since": clock.as_utc(f.followed_since),
                "unsubscribed": clock.as_utc(f.unsubscribed_at) if f.unsubscribed_at else None,
                "opted_out": buyer.opted_out,
            }
            for f, buyer in catalog.followers(s, brand_id)
        ]

    rows = _read(request, who, read)
    return render(request, who, "brand/followers.html", followers=rows)


@router.get("/brand/products")
def products(request: Request, who: Visitor = Who) -> Response:
    brand_id = _brand(request, who)
    found = _read(request, who, catalog.products, brand_id)
    return render(request, who, "brand/products.html", products=found)


@router.get("/brand/promotions")
def promotions(request: Request, who: Visitor = Who) -> Response:
    brand_id = _brand(request, who)

    def read(s: Session) -> list[tuple[Promotion, Product]]:
        own = {p.id: p for p in catalog.products(s, brand_id)}
        return [(p, own[p.product_id]) for p in catalog.promotions(s) if p.product_id in own]

    rows = _read(request, who, read)
    return render(
        request,
        who,
        "brand/promotions.html",
        promotions=rows,
        statuses=wording.PROMOTION_STATUS,
    )
