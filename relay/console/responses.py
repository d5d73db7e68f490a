"""The seller's response-time dashboard (``/responses``).

The figures are ``relay responses``' (``relay.ops.response_times``: the same
query, so the page says what ``relay responses --json`` prints); the weekly
trend is the same query over week-long windows; the waiting messages are the
running clocks, and "no response needed" is the same mark as ``POST
/api/v1/conversations/{id}/no-response-needed``, through the database writer.

A seller sees its own figures only: another seller's id is a 404, as in the
API.  An admin or moderator picks a seller with ``?seller=ID`` (without it:
every seller's line, each a link).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from relay.console.accounts import Account, ConsoleRole
from relay.console.i18n import Formats
from relay.console.web import Refusal, Visitor, db_of, need, posted, redirect, render, visitor
from relay.core import clock
from relay.core.clock import as_utc
from relay.ops import response_times
from relay.ops.response_times import SellerResponses, Waiting, WeekFigures
from relay.storage.directory import DirectoryError, NotFound
from relay.storage.models import Conversation

router = APIRouter(include_in_schema=False)
Who = Depends(visitor)

WEEKS = 8
"""The trend's default length; ``?weeks=`` asks for 4 to 26."""
CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM = 640, 220, 20, 180


def _sees_responses(account: Account) -> bool:
    return account.moderates or account.role is ConsoleRole.SELLER


def duration(_: Callable[[str], str], fmt: Formats, seconds: float | None) -> str:
    """A response time the way ``relay responses`` writes it (``2h 10m``, ``12m``,
    ``40s``), in the visitor's language and digits."""
    if seconds is None:
        return "\N{EN DASH}"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(hours)s h %(minutes)s min") % {
            "hours": fmt.number(hours),
            "minutes": fmt.number(minutes),
        }
    if minutes:
        return _("%(minutes)s min") % {"minutes": fmt.number(minutes)}
    return _("%(seconds)s s") % {"seconds": fmt.number(secs)}


@dataclass(frozen=True, slots=True)
class Bar:
    """One week of the trend chart, placed in the SVG's coordinates."""

    week: datetime
    share: float | None
    counted: int
    x: int
    y: int
    height: int
    width: int


def bars(weeks: list[WeekFigures]) -> list[Bar]:
    """The chart's bars: height proportional to the week's share within 24 h
    (a week with nothing answered or late has no bar, and says so)."""
    slot = (CHART_WIDTH - 60) // max(len(weeks), 1)
    span = CHART_BOTTOM - CHART_TOP
    result = []
    for i, week in enumerate(weeks):
        share = week.figures.share_within_24h
        height = 0 if share is None else round(share * span)
        f = week.figures
        result.append(
            Bar(
                week=week.start,
                share=share,
                counted=f.within_24h + f.late + f.open_late,
                x=50 + i * slot + slot // 6,
                y=CHART_BOTTOM - height,
                height=height,
                width=slot * 2 // 3,
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class Dashboard:
    figures: SellerResponses
    weeks: list[WeekFigures]
    waiting: list[Waiting]


def _dashboard(
    s: Session, seller_id: int, since: datetime | None, weeks: int, now: datetime
) -> Dashboard:
    (figures,) = response_times.response_stats(s, now=now, seller_id=seller_id, since=since)
    return Dashboard(
        figures,
        response_times.weekly_stats(s, now=now, seller_id=seller_id, weeks=weeks),
        response_times.waiting(s, seller_id=seller_id, since=since),
    )


def _seller_of(who: Visitor, account: Account, asked: str | None) -> int | None:
    """The seller shown: a seller's own (another's id is a 404); for admins and
    moderators the one asked for, or None (the list of every seller)."""
    wanted: int | None = None
    if asked:
        if not (asked.isascii() and asked.isdigit()) or not 0 < int(asked) < 2**63:
            raise Refusal(404, who._("There is no such page."))
        wanted = int(asked)
    if account.role is ConsoleRole.SELLER:
        if wanted is not None and not account.scope.sees_seller(wanted):
            raise Refusal(404, who._("There is no such page."))
        return account.subject_id
    return wanted


def _since(who: Visitor, text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return response_times.parse_since(text)
    except ValueError:
        raise Refusal(422, who._("That is not a date: use YYYY-MM-DD.")) from None


@router.get("/responses")
async def dashboard(
    request: Request,
    who: Visitor = Who,
    seller: str | None = None,
    since: str | None = None,
    weeks: str | None = None,
) -> Response:
    account = need(request, who, _sees_responses)
    seller_id = _seller_of(who, account, seller)
    start = _since(who, since)
    span = int(weeks) if weeks and weeks.isascii() and weeks.isdigit() else WEEKS
    span = min(max(span, 4), 26)
    db = db_of(request)
    now = clock.now()
    if seller_id is None:
        everyone = await run_in_threadpool(
            db.call, response_times.response_stats, now=now, since=start
        )
        return render(
            request,
            who,
            "responses_all.html",
            sellers=everyone,
            since=since or "",
            duration=duration,
        )
    try:
        board = await run_in_threadpool(db.call, _dashboard, seller_id, start, span, now)
    except DirectoryError:
        raise Refusal(404, who._("There is no such page.")) from None
    return render(
        request,
        who,
        "responses.html",
        seller_id=seller_id,
        chosen=seller is not None and account.moderates,
        f=board.figures,
        bars=bars(board.weeks),
        chart=(CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM),
        waiting=_by_conversation(board.waiting),
        now=as_utc(now),
        since=since or "",
        weeks=span,
        duration=duration,
        done=request.query_params.get("done", ""),
    )


def _by_conversation(rows: list[Waiting]) -> list[tuple[int, list[Waiting]]]:
    """The waiting messages grouped by conversation, the longest-waiting first."""
    groups: dict[int, list[Waiting]] = {}
    for row in rows:
        groups.setdefault(row.conversation_id, []).append(row)
    return list(groups.items())


@router.post("/responses/conversations/{conversation_id}/no-response-needed")
async def no_response_needed(
    conversation_id: int, request: Request, who: Visitor = Who
) -> Response:
    """The API's ``no-response-needed``: the same visibility check and the same mark."""
    account = need(request, who, _sees_responses)
    form = await posted(request, who)
    scope = account.scope

    def run(s: Session) -> tuple[int, int]:
        # The API's check: another seller's conversation is as unknown as a missing one.
        conversation = s.get(Conversation, conversation_id)
        if conversation is None or not scope.sees_seller(conversation.seller_id):
            raise NotFound(f"no conversation with id {conversation_id}")
        stopped = response_times.mark_no_response_needed(s, conversation_id)
        return conversation.seller_id, stopped

    try:
        seller_id, stopped = await run_in_threadpool(db_of(request).write, run)
    except DirectoryError:
        raise Refusal(404, who._("There is no such conversation.")) from None
    back: dict[str, str | int] = {"done": stopped}
    if account.moderates:
        back["seller"] = seller_id
    since = form.get("since")
    if isinstance(since, str) and since and _since(who, since):
        back["since"] = since
    return redirect("/responses?" + urlencode(back))
