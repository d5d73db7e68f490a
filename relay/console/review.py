"""The moderators' campaign review queue (``/review``).

A moderator or an admin reads each campaign in review as the brand wrote it
(its texts are the brand's, shown escaped, never as HTML) and approves it or
rejects it with a reason, which the brand reads on its campaign page.  The
decision is ``lifecycle.review``, the function behind the API's
``POST /campaigns/{id}/review`` and ``relay campaign review``, and it is
written to the decisions' log in the same transaction, naming the console user.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from relay.campaigns import catalog, lifecycle
from relay.campaigns.catalog import CampaignError
from relay.campaigns.models import Brand, Campaign, CampaignStatus, Product, Promotion
from relay.console import wording
from relay.console.i18n import Formats
from relay.console.web import Visitor, db_of, need, posted, redirect, render, visitor
from relay.core import clock
from relay.storage import decisions

router = APIRouter(include_in_schema=False)
Who = Depends(visitor)
MAX_REASON = 2000


@dataclass(slots=True)
class Pending:
    """A campaign in review, with what the moderator needs to judge it."""

    campaign: Campaign
    brand: Brand
    main: Product
    extras: list[Product]
    promotion: Promotion | None
    event_name: str | None


def _queue(s: Session) -> list[Pending]:
    found = []
    for c in lifecycle.list_campaigns(s, status=CampaignStatus.IN_REVIEW):
        assert c.id is not None
        event = catalog.get_event(s, c.event_id) if c.event_id else None
        found.append(
            Pending(
                campaign=c,
                brand=catalog.get_brand(s, c.brand_id),
                main=catalog.get_product(s, c.main_product_id),
                extras=lifecycle.extra_products(s, c.id),
                promotion=s.get(Promotion, c.promotion_id) if c.promotion_id else None,
                event_name=event.name if event else None,
            )
        )
    return found


def _page(
    request: Request,
    who: Visitor,
    *,
    done: str = "",
    errors: list[str] | None = None,
    failed: int | None = None,
) -> Response:
    queue = db_of(request).call(_queue)
    return render(
        request,
        who,
        "review.html",
        status=422 if errors else 200,
        queue=queue,
        kinds=wording.KIND,
        done=done,
        errors=errors or [],
        failed=failed,
    )


@router.get("/review")
def review_queue(request: Request, who: Visitor = Who, done: str = "") -> Response:
    need(request, who, lambda a: a.moderates)
    return _page(request, who, done=done if done in ("approved", "rejected") else "")


@router.post("/review/{campaign_id}")
async def decide(request: Request, campaign_id: int, who: Visitor = Who) -> Response:
    account = need(request, who, lambda a: a.moderates)
    form = await posted(request, who)
    decision = form.get("decision")
    reason = str(form.get("reason", "")).strip()[:MAX_REASON]
    if decision not in ("approve", "reject"):
        raise HTTPException(404)
    approve = decision == "approve"

    def run(s: Session) -> None:
        if s.get(Campaign, campaign_id) is None:
            raise HTTPException(404)
        lifecycle.review(s, campaign_id, approve=approve, reason=reason, now=clock.now())
        decisions.record(
            s,
            actor=account.actor,
            action=decisions.Action.CAMPAIGN_APPROVE
            if approve
            else decisions.Action.CAMPAIGN_REJECT,
            subject=decisions.campaign_subject(campaign_id),
            detail=reason,
        )

    try:
        await run_in_threadpool(db_of(request).write, run)
    except CampaignError as exc:
        errors = wording.refusal(str(exc), who._, Formats(who.lang))
        return await run_in_threadpool(
            lambda: _page(request, who, errors=errors, failed=campaign_id)
        )
    return redirect(f"/review?done={'approved' if approve else 'rejected'}")
