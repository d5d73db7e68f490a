"""``/api/v1/brands/{id}/promotions``, ``/promotions/{id}/...`` and ``/events``.

The same functions as ``relay promotion`` and ``relay event``
(``relay.campaigns.catalog``), refusing in their words.  A brand key creates
and cancels its own products' promotions; approving or rejecting one is
moderation's, an admin's only (403 for a brand key), and so is ``approved``
at creation.  Shopping events are the marketplace's: an admin adds them, a
brand key reads them to theme its campaigns.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, Strict, StrictBool
from sqlmodel import Session

from relay.api.auth import Admin, Caller
from relay.api.catalog import (
    AsText,
    IsoDate,
    IsoDateTime,
    brands_role,
    db,
    visible_brand,
    visible_promotion,
)
from relay.api.decided import actor
from relay.api.directory import Body, Name
from relay.api.problems import Kind, Problem
from relay.campaigns import catalog
from relay.campaigns.models import Product, Promotion, PromotionKind, PromotionStatus, ShoppingEvent
from relay.core import clock
from relay.core.scopes import Scope
from relay.storage import decisions
from relay.storage.directory import NotFound

router = APIRouter(tags=["campaigns"])


# --- promotions ---------------------------------------------------------------------


class NewPromotion(Body):
    product_id: Annotated[int, Field(ge=1)]
    kind: Annotated[PromotionKind, Strict(False), AsText]
    discount: Annotated[str, Field(min_length=1, max_length=50)]
    """Percent, or amount in the currency, as text (``"20"``, ``"50000"``)."""
    starts_at: IsoDateTime
    ends_at: IsoDateTime
    """Not included: the promotion runs up to it."""
    approved: StrictBool = False
    """Approved at once (an admin only); else pending moderation."""


class PromotionOut(BaseModel):
    promotion_id: int
    product_id: int
    kind: Annotated[PromotionKind, Strict(False), AsText]
    discount: str
    starts_at: datetime
    ends_at: datetime
    status: PromotionStatus


class PromotionChanged(PromotionOut):
    suspended_campaigns: list[int]
    """Campaigns showing it, not yet started, that this suspended."""


def _promotion_out(p: Promotion) -> PromotionOut:
    assert p.id is not None
    return PromotionOut(
        promotion_id=p.id,
        product_id=p.product_id,
        kind=p.kind,
        discount=p.discount,
        starts_at=clock.as_utc(p.starts_at),
        ends_at=clock.as_utc(p.ends_at),
        status=p.status,
    )


@router.post("/brands/{brand_id}/promotions", status_code=201, response_model=PromotionOut)
def add_promotion(
    brand_id: int, body: NewPromotion, request: Request, scope: Caller
) -> PromotionOut:
    """A promotion on one of the brand's products (``relay promotion add``),
    pending moderation unless an admin sends ``approved``."""
    if body.approved and not scope.is_admin:
        raise Problem(Kind.FORBIDDEN, "only the marketplace approves promotions")

    def run(s: Session) -> PromotionOut:
        visible_brand(s, scope, brand_id)
        product = s.get(Product, body.product_id)
        if product is None or product.brand_id != brand_id:
            raise NotFound(f"brand {brand_id} has no product with id {body.product_id}")
        p = catalog.add_promotion(
            s,
            body.product_id,
            kind=body.kind,
            discount=body.discount,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            approved=body.approved,
        )
        return _promotion_out(p)

    return db(request).write(run)


@router.get("/brands/{brand_id}/promotions", response_model=list[PromotionOut])
def list_promotions(
    brand_id: int,
    request: Request,
    scope: Caller,
    product_id: Annotated[int | None, Query(ge=1)] = None,
    eligible_for: Annotated[date | None, Query()] = None,
) -> list[PromotionOut]:
    """The brand's promotions; with ``product_id`` and ``eligible_for`` (a start
    date), the ones a campaign on that product starting that day may show."""
    if eligible_for is not None and product_id is None:
        raise Problem(Kind.VALIDATION, "eligible_for needs product_id")

    def run(s: Session) -> list[PromotionOut]:
        visible_brand(s, scope, brand_id)
        own = {p.id for p in catalog.products(s, brand_id)}
        if product_id is not None and product_id not in own:
            raise NotFound(f"brand {brand_id} has no product with id {product_id}")
        if eligible_for is not None and product_id is not None:
            found = catalog.eligible_promotions(s, product_id, eligible_for, clock.now())
        else:
            found = catalog.promotions(s, product_id)
        return [_promotion_out(p) for p in found if p.product_id in own]

    return db(request).call(run)


def _set_promotion(
    request: Request,
    scope: Scope,
    promotion_id: int,
    status: PromotionStatus,
    decision: decisions.Action | None = None,
) -> PromotionChanged:
    """``decision``: moderation's, logged with the key (a brand's cancel is not one)."""
    who = actor(request)

    def run(s: Session) -> PromotionChanged:
        visible_promotion(s, scope, promotion_id)
        p, suspended = catalog.set_promotion_status(s, promotion_id, status)
        if decision is not None:
            subject = decisions.promotion_subject(promotion_id)
            decisions.record(s, actor=who, action=decision, subject=subject)
        return PromotionChanged(**_promotion_out(p).model_dump(), suspended_campaigns=suspended)

    return db(request).write(run)


@router.post("/promotions/{promotion_id}/approve", response_model=PromotionChanged)
def approve_promotion(promotion_id: int, request: Request, scope: Admin) -> PromotionChanged:
    """Moderation approves a pending promotion: campaigns may show it."""
    return _set_promotion(
        request, scope, promotion_id, PromotionStatus.APPROVED, decisions.Action.PROMOTION_APPROVE
    )


@router.post("/promotions/{promotion_id}/reject", response_model=PromotionChanged)
def reject_promotion(promotion_id: int, request: Request, scope: Admin) -> PromotionChanged:
    """Moderation rejects a promotion: a campaign showing it that has not started
    is suspended; refused while such a campaign is sending."""
    return _set_promotion(
        request, scope, promotion_id, PromotionStatus.REJECTED, decisions.Action.PROMOTION_REJECT
    )


@router.post("/promotions/{promotion_id}/cancel", response_model=PromotionChanged)
def cancel_promotion(promotion_id: int, request: Request, scope: Caller) -> PromotionChanged:
    """The brand (or an admin) cancels a promotion, with the same effect on its
    campaigns as a rejection."""
    return _set_promotion(request, scope, promotion_id, PromotionStatus.CANCELLED)


# --- shopping events ------------------------------------------------------------------


class NewEvent(Body):
    name: Name
    starts_on: IsoDate
    """Its first day (UTC), included."""
    ends_on: IsoDate
    """Its last day (UTC), included (unlike a promotion's end)."""


class EventOut(BaseModel):
    event_id: int
    name: str
    starts_on: date
    ends_on: date


def _event_out(e: ShoppingEvent) -> EventOut:
    assert e.id is not None
    return EventOut(event_id=e.id, name=e.name, starts_on=e.starts_on, ends_on=e.ends_on)


@router.post("/events", status_code=201, response_model=EventOut)
def create_event(body: NewEvent, request: Request, _scope: Admin) -> EventOut:
    """A shopping event campaigns may be themed on (``relay event add``)."""
    return db(request).write(
        lambda s: _event_out(
            catalog.add_event(s, name=body.name, starts_on=body.starts_on, ends_on=body.ends_on)
        )
    )


@router.get("/events", response_model=list[EventOut])
def list_events(request: Request, scope: Caller) -> list[EventOut]:
    """Every shopping event (admin and brand keys)."""
    brands_role(scope)
    return db(request).call(lambda s: [_event_out(e) for e in catalog.events(s)])
