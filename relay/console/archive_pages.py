"""The archive: search by conversation, status, direction, dates and rule, page by
page, and one message's metadata, rule hits and deliveries.

The same query as ``GET /api/v1/archive`` and ``relay archive list``
(``relay.storage.archive.list_messages``), and the same detail as
``relay archive show`` (``message_detail``).  A filter the form did not give
as expected (a mistyped date) is said on the page, not ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from relay.console import modlabels
from relay.console.quarantine_pages import PAGE, message_number, moderates, parse_id
from relay.console.web import Refusal, Visitor, db_of, need, render, visitor
from relay.ops.response_times import parse_since
from relay.storage import archive as archive_mod
from relay.storage.archive import MessageSummary
from relay.storage.models import Direction, MessageStatus

router = APIRouter(include_in_schema=False)
Who = Depends(visitor)
FIELDS = ("conversation", "status", "direction", "since", "until", "rule")


def _date(text: str) -> datetime | None:
    try:
        return parse_since(text)
    except ValueError:
        return None


@router.get("/archive")
async def search(request: Request, who: Visitor = Who) -> Response:
    need(request, who, moderates)
    _ = who._
    given = {k: request.query_params.get(k, "").strip()[:200] for k in FIELDS}
    problems: list[str] = []
    filters: dict[str, Any] = {}
    if given["conversation"]:
        conv = parse_id(given["conversation"])
        if conv is None:
            problems.append(_("A conversation is a number."))
        filters["conversation_id"] = conv
    if given["status"]:
        if given["status"] not in {s.value for s in MessageStatus}:
            problems.append(_("Choose a status from the list."))
        filters["status"] = given["status"]
    if given["direction"]:
        if given["direction"] not in {d.value for d in Direction}:
            problems.append(_("Choose a direction from the list."))
        filters["direction"] = given["direction"]
    for name in ("since", "until"):
        if given[name]:
            when = _date(given[name])
            if when is None:
                problems.append(_("Write dates as YYYY-MM-DD."))
                given[name] = ""  # a date field shows no value that is not a date
            filters[name] = when
    if given["rule"]:
        filters["rule_id"] = given["rule"]
    before_id = parse_id(request.query_params.get("before"))
    found: list[MessageSummary] = []
    if not problems:

        def run(s: Session) -> list[MessageSummary]:
            return archive_mod.list_messages(s, before_id=before_id, limit=PAGE + 1, **filters)

        found = await run_in_threadpool(db_of(request).call, run)
    more = len(found) > PAGE
    found = found[:PAGE]
    older = ""
    if more:
        kept = {k: v for k, v in given.items() if v}
        older = "/archive?" + urlencode({**kept, "before": found[-1].message.id})
    return render(
        request,
        who,
        "archive.html",
        given=given,
        problems=sorted(set(problems)),
        messages=found,
        older=older,
        statuses=[s.value for s in MessageStatus],
        directions=[d.value for d in Direction],
        label=modlabels.labels(_),
    )


@router.get("/archive/{number}")
async def show(request: Request, number: str, who: Visitor = Who) -> Response:
    need(request, who, moderates)
    message_id = message_number(who, number)
    detail = await run_in_threadpool(db_of(request).call, archive_mod.message_detail, message_id)
    if detail is None:
        raise Refusal(404, who._("There is no message with this number."))
    return render(
        request,
        who,
        "archive_message.html",
        m=detail,
        when=lambda text: _date(text) if text else None,
        label=modlabels.labels(who._),
    )
