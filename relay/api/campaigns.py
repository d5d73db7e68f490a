"""``/api/v1/campaigns`` and ``/brands/{id}/calendar``: a campaign from draft to report.

The same functions as ``relay campaign`` (``relay.campaigns.lifecycle``,
``calendar``, ``report``), so every rule (the 72-hour review lead, the 7-day
collision forecast, an eligible promotion, only a draft edited...) is checked
where the CLI checks it and refused in its words.  ``CampaignError`` is one
type for every refusal, whether a state (a campaign no longer a draft) or a
rule (a date too soon), so all are answered ``422 refused`` with the rule's
explanation as ``detail``; only an id the key cannot see is a 404.  A brand
key drafts, submits, edits and cancels its own brand's campaigns; the review
is moderation's, an admin's only (403 for a brand key).
"""

from __future__ import annotations

import calendar as month_days
import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, Strict
from sqlmodel import Session

from relay.api.auth import Admin, Caller
from relay.api.catalog import AsText, IsoDate, brands_role, db, visible_brand, visible_promotion
from relay.api.decided import DecisionOut, actor
from relay.api.directory import Body
from relay.api.problems import Kind, Problem
from relay.campaigns import calendar, lifecycle, report
from relay.campaigns.models import Campaign, CampaignKind, CampaignStatus
from relay.core import clock
from relay.core.scopes import Scope
from relay.storage import decisions
from relay.storage.directory import NotFound

router = APIRouter(tags=["campaigns"])

Id = Annotated[int, Field(ge=1)]
Subject = Annotated[str, Field(min_length=1, max_length=lifecycle.MAX_SUBJECT)]
Content = Annotated[str, Field(min_length=1, max_length=lifecycle.MAX_CONTENT)]
Extras = Annotated[list[Id], Field(max_length=20)]
ChosenKind = Annotated[CampaignKind, Strict(False), AsText]


class NewCampaign(Body):
    brand_id: Id
    kind: ChosenKind
    main_product_id: Id
    extra_product_ids: Extras = Field(default_factory=list)
    """Other featured products (up to 4)."""
    promotion_id: Id | None = None
    event_id: Id | None = None
    subject: Subject
    content: Content
    start_on: IsoDate
    """The first day of the 5-day delivery window (UTC), at least 72 hours away."""


class CampaignChange(Body):
    """What changes; an absent field is unchanged, ``promotion_id`` or
    ``event_id`` sent as null removes it."""

    kind: ChosenKind | None = None
    main_product_id: Id | None = None
    extra_product_ids: Extras | None = None
    promotion_id: Id | None = None
    event_id: Id | None = None
    subject: Subject | None = None
    content: Content | None = None
    start_on: IsoDate | None = None


class Decision(Body):
    decision: Annotated[str, Field(pattern="^(approve|reject)$")]
    reason: Annotated[str, Field(max_length=2000)] = ""
    """Required to reject: the brand is told it."""


class Window(BaseModel):
    start: datetime
    end: datetime


class Change(BaseModel):
    status: CampaignStatus
    at: datetime
    reason: str


class Report(BaseModel):
    """What became of the campaign's messages (``relay campaign show``)."""

    planned: int
    sent: int
    delivered: int
    bounced: int
    skipped_7_days: int
    skipped_for: dict[str, int]
    unsubscribed: int
    unsubscribed_here: int
    opted_out: int
    withdrawn: int
    pending: int


class CampaignOut(BaseModel):
    campaign_id: int
    brand_id: int
    kind: CampaignKind
    status: CampaignStatus
    status_reason: str
    subject: str
    content: str
    main_product_id: int
    extra_product_ids: list[int]
    promotion_id: int | None
    event_id: int | None
    start_on: date
    window: Window
    history: list[Change] | None = None
    """Every status change (on a single campaign, not in lists)."""
    report: Report
    withdrawn_now: int | None = None
    """After a cancel: the messages that will not be sent."""
    decisions: list[DecisionOut] | None = None
    """Moderation's decisions, on ``GET /campaigns/{id}``: who (for admin keys) and when."""


class Collision(BaseModel):
    campaign_id: int
    start_on: date
    followers: int


class Day(BaseModel):
    date: date
    allowed: bool
    colour: calendar.Colour
    reasons: list[str]
    """Why it cannot be chosen, in the rules' words."""
    colliding_followers: int
    collisions: list[Collision]


def _show(s: Session, campaign_id: int, *, with_history: bool = True) -> CampaignOut:
    """As ``relay campaign show --json``."""
    c = lifecycle.get_campaign(s, campaign_id)
    data: dict[str, Any] = {
        **lifecycle.describe(s, c, with_history=with_history),
        "report": report.campaign_report(s, campaign_id),
    }
    return CampaignOut.model_validate(data)


def _campaign(s: Session, scope: Scope, campaign_id: int) -> Campaign:
    campaign = s.get(Campaign, campaign_id)
    if campaign is None or not scope.sees_brand(campaign.brand_id):
        raise NotFound(f"no campaign with id {campaign_id}")
    return campaign


@router.post("/campaigns", status_code=201, response_model=CampaignOut)
def create_campaign(body: NewCampaign, request: Request, scope: Caller) -> CampaignOut:
    """A draft (``relay campaign create``): every rule is checked now, and again
    when it is submitted."""
    draft = lifecycle.Draft(
        kind=body.kind,
        main_product_id=body.main_product_id,
        extra_product_ids=body.extra_product_ids,
        promotion_id=body.promotion_id,
        event_id=body.event_id,
        subject=body.subject,
        content=body.content,
        start_on=body.start_on,
    )

    def run(s: Session) -> CampaignOut:
        visible_brand(s, scope, body.brand_id)
        c = lifecycle.create(s, body.brand_id, draft, now=clock.now())
        assert c.id is not None
        return _show(s, c.id)

    return db(request).write(run)


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut)
def edit_campaign(
    campaign_id: int, body: CampaignChange, request: Request, scope: Caller
) -> CampaignOut:
    """Change a draft, or a campaign in review, which goes back to draft
    (``relay campaign edit``)."""
    sent = body.model_fields_set
    draft = lifecycle.Draft(
        kind=body.kind,
        main_product_id=body.main_product_id,
        extra_product_ids=body.extra_product_ids,
        promotion_id=body.promotion_id,
        event_id=body.event_id,
        subject=body.subject,
        content=body.content,
        start_on=body.start_on,
    )
    draft.clear = {
        name
        for name, value in (("promotion", body.promotion_id), ("event", body.event_id))
        if f"{name}_id" in sent and value is None
    }

    def run(s: Session) -> CampaignOut:
        _campaign(s, scope, campaign_id)
        lifecycle.edit(s, campaign_id, draft, now=clock.now())
        return _show(s, campaign_id)

    return db(request).write(run)


@router.post("/campaigns/{campaign_id}/submit", response_model=CampaignOut)
def submit_campaign(campaign_id: int, request: Request, scope: Caller) -> CampaignOut:
    """Send a draft to moderation, at least 72 hours before its start date."""

    def run(s: Session) -> CampaignOut:
        _campaign(s, scope, campaign_id)
        lifecycle.submit(s, campaign_id, now=clock.now())
        return _show(s, campaign_id)

    return db(request).write(run)


@router.post("/campaigns/{campaign_id}/review", response_model=CampaignOut)
def review_campaign(
    campaign_id: int, body: Decision, request: Request, scope: Admin
) -> CampaignOut:
    """Moderation's decision on a campaign in review; a rejection is final."""
    who = actor(request)

    def run(s: Session) -> CampaignOut:
        _campaign(s, scope, campaign_id)
        lifecycle.review(
            s,
            campaign_id,
            approve=body.decision == "approve",
            reason=body.reason,
            now=clock.now(),
        )
        decisions.record(
            s,
            actor=who,
            action=decisions.Action(f"campaign.{body.decision}"),
            subject=decisions.campaign_subject(campaign_id),
            detail=body.reason,
        )
        return _show(s, campaign_id)

    return db(request).write(run)


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
def cancel_campaign(campaign_id: int, request: Request, scope: Caller) -> CampaignOut:
    """The brand withdraws its campaign: what has not been sent will not be."""

    def run(s: Session) -> CampaignOut:
        _campaign(s, scope, campaign_id)
        _c, withdrawn = lifecycle.cancel(s, campaign_id)
        return _show(s, campaign_id).model_copy(update={"withdrawn_now": withdrawn})

    return db(request).write(run)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
def read_campaign(campaign_id: int, request: Request, scope: Caller) -> CampaignOut:
    """A campaign, its status history and what became of its messages."""

    def run(s: Session) -> CampaignOut:
        _campaign(s, scope, campaign_id)
        subject = decisions.campaign_subject(campaign_id)
        made = decisions.listed(s, subject, with_actor=scope.is_admin)
        return _show(s, campaign_id).model_copy(
            update={"decisions": [DecisionOut.model_validate(d) for d in made]}
        )

    return db(request).call(run)


@router.get("/campaigns", response_model=list[CampaignOut])
def list_campaigns(
    request: Request,
    scope: Caller,
    brand_id: Annotated[int | None, Query(ge=1)] = None,
    status: Annotated[CampaignStatus | None, Query()] = None,
) -> list[CampaignOut]:
    """Campaigns by start date: every brand's for an admin, its own for a brand key."""
    brands_role(scope)
    if not scope.is_admin:
        if brand_id is not None and brand_id != scope.id:
            raise NotFound(f"no brand with id {brand_id}")
        brand_id = scope.id

    def run(s: Session) -> list[CampaignOut]:
        found = lifecycle.list_campaigns(s, brand_id=brand_id, status=status)
        return [_show(s, c.id, with_history=False) for c in found if c.id is not None]

    return db(request).call(run)


_MONTH = re.compile(r"^\d{4}-\d{2}$")


def _dates(month: str | None, first: date | None, last: date | None) -> tuple[date, int]:
    """The calendar's first day and how many days: a month, or ``from``..``to``
    (both included), or 31 days from today as the CLI shows by default."""
    if month is not None:
        if first is not None or last is not None:
            raise Problem(Kind.VALIDATION, "give month, or from and to, not both")
        try:
            if not _MONTH.match(month):
                raise ValueError
            year, number = int(month[:4]), int(month[5:])
            start = date(year, number, 1)
        except ValueError:
            raise Problem(Kind.VALIDATION, f"month {month!r} is not YYYY-MM") from None
        return start, month_days.monthrange(year, number)[1]
    start = first or clock.now().date()
    if last is None:
        return start, 31
    days = (last - start).days + 1
    if not 1 <= days <= calendar.MAX_DAYS:
        raise Problem(
            Kind.VALIDATION, f"to must be on or after from, at most {calendar.MAX_DAYS} days on"
        )
    return start, days


@router.get("/brands/{brand_id}/calendar", response_model=list[Day])
def brand_calendar(
    brand_id: int,
    request: Request,
    scope: Caller,
    month: Annotated[str | None, Query(description="YYYY-MM")] = None,
    first: Annotated[date | None, Query(alias="from")] = None,
    last: Annotated[date | None, Query(alias="to")] = None,
    campaign_id: Annotated[int | None, Query(ge=1)] = None,
    event_id: Annotated[int | None, Query(ge=1)] = None,
    promotion_id: Annotated[int | None, Query(ge=1)] = None,
) -> list[Day]:
    """The date picker, as ``relay campaign calendar --json``: per start date,
    whether it may be chosen (and why not), and the campaigns it would collide
    with under the 7-day rule, for how many followers.  ``campaign_id`` (or
    ``event_id``/``promotion_id``) applies that campaign's event and promotion."""
    start, days = _dates(month, first, last)
    now = clock.now()

    def run(s: Session) -> list[Day]:
        visible_brand(s, scope, brand_id)
        if campaign_id is not None:
            _campaign(s, scope, campaign_id)
        if promotion_id is not None:
            visible_promotion(s, scope, promotion_id)
        found = calendar.calendar(
            s,
            brand_id,
            start,
            days,
            now=now,
            campaign_id=campaign_id,
            event_id=event_id,
            promotion_id=promotion_id,
        )
        return [Day.model_validate(d.as_json()) for d in found]

    return db(request).call(run)
