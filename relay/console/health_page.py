"""The relay's health as ``GET /api/v1/health`` and ``relay status`` say it:
the database and the downstream checked live, the queue's depth and the age of
its oldest delivery (``relay.ops.health.check``, in the thread pool: it blocks
for up to its timeouts)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from relay.console import modlabels
from relay.console.quarantine_pages import config_of, moderates
from relay.console.web import Visitor, db_of, need, render, visitor
from relay.ops.health import check

router = APIRouter(include_in_schema=False)
Who = Depends(visitor)


def age_parts(seconds: float | None) -> tuple[int, int, int] | None:
    """Hours, minutes and seconds of an age (None: no pending delivery)."""
    if seconds is None:
        return None
    whole = int(seconds)
    return whole // 3600, whole % 3600 // 60, whole % 60


@router.get("/health")
async def health(request: Request, who: Visitor = Who) -> Response:
    need(request, who, moderates)
    found = await run_in_threadpool(check, config_of(request), db_of(request))
    return render(
        request,
        who,
        "health.html",
        health=found,
        age=age_parts(found.queue_oldest_age_seconds),
        label=modlabels.labels(who._),
    )
