"""Sellers' response times: how long buyers wait for an answer.

The clock
---------
A buyer message **starts a clock** when it reached the seller or is on its way
(``direction = buyer_to_seller``, status ``queued`` or ``delivered``; rejected,
quarantined and failed ones never reached the seller) and is not
auto-submitted (an out-of-office needs no answer).

A seller message **stops the clocks** started before it in the same
conversation when it reached the buyer or is on its way (``seller_to_buyer``,
``queued`` or ``delivered``, not auto-submitted, ``created_at`` strictly after
the buyer message).  A reply refused by a filter (``rejected``), blocked by the
buyer's opt-out (``blocked``), held in quarantine or ``failed`` was never read
by the buyer, so it answers nothing.  The answer's time is its ``created_at``:
when the seller answered, not when the buyer's server took it.

A seller's **"no response needed"** (``relay conversation no-response-needed
ID``, a ``ResponseMark``) also stops the clocks started before it: those buyer
messages count as ``no_response_needed``, neither within 24 h nor late, and
stay out of the share and the percentiles.

Each buyer message's *stop* is the earliest of the first counting reply after
it and the first mark after it.  Buyer messages of one conversation with the
same stop were answered together: they form a group whose start is its earliest
message, and every message of the group gets the group's response time (stop -
start).  So a buyer who writes at 0 h and again at 20 h and gets an answer at
30 h has waited 30 h twice, not 30 h and 10 h.  Unanswered messages of a
conversation form one group too, measured against ``now``.

The units are buyer messages (README, "Response times": "share of buyer messages answered
within 24 hours").  Per seller:

- ``within_24h``: answered after at most 24 h (exactly 24 h is within);
- ``late``: answered after more than 24 h;
- ``open``: not answered, waiting for at most 24 h so far;
- ``open_late``: not answered and already waiting more than 24 h;
- ``no_response_needed``: stopped by the seller's mark;
- ``share_within_24h`` = within / (within + late + open_late): an open message
  that is already late is as late as an answered one; ``None`` when nothing
  has been answered or become late yet;
- ``median_seconds`` and ``p90_seconds`` over the answered messages (within +
  late), nearest rank (the value at rank ceil(p·n) in ascending order).

``since`` keeps the buyer messages created at or after it: only those start
clocks (and so only those form groups); replies and marks count whenever they
came.

How it is computed
------------------
One SQL statement (SQLAlchemy Core, the same on SQLite and PostgreSQL) returns
one row per seller: the database walks the messages, Python never loads them.
For each clock-starting buyer message, two correlated subqueries find the first
counting reply and the first mark after it, through the indexes on
``message(conversation_id, created_at)`` and ``response_mark(conversation_id,
at)``; a window ``MIN`` over (conversation, stop) gives the group's start;
``ROW_NUMBER`` and ``COUNT`` over the seller's answered messages pick the
percentiles, with integer arithmetic for the ranks ((n+1)/2 and (9n+9)/10 are
ceil(n/2) and ceil(9n/10)) because SQLite has no ``ceil`` by default.

Time differences are dialect-specific: ``seconds_between`` compiles to
``julianday`` arithmetic on SQLite, which stores datetimes as naive UTC
strings, and to ``EXTRACT(EPOCH FROM ...)`` on PostgreSQL, which stores
``timestamptz``.  Both are rounded to milliseconds (SQLite's resolution), so
the two back ends agree and exactly 24 h compares as exactly 24 h.  ``now`` and
``since`` are bound with the columns' own type, so they are stored-format
compatible on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FromClause, FunctionElement
from sqlmodel import Session, SQLModel

from relay.core.clock import as_utc
from relay.storage.directory import DirectoryError, NotFound
from relay.storage.events import EventType
from relay.storage.models import Conversation, Direction, MessageStatus, ResponseMark, utcnow

DAY_SECONDS = 24 * 3600
"""The promise: an answer within 24 hours."""

PASSED = (MessageStatus.QUEUED, MessageStatus.DELIVERED)
"""Statuses of a message that reached its recipient or is on its way."""

WITHIN, LATE, OPEN, OPEN_LATE, NO_RESPONSE_NEEDED = (
    "within_24h",
    "late",
    "open",
    "open_late",
    "no_response_needed",
)
"""What became of one buyer message's clock (the ``outcome`` column)."""


@dataclass(frozen=True, slots=True)
class SellerResponses:
    """One seller's response-time figures (see the module docstring)."""

    seller_id: int
    seller_name: str
    buyer_messages: int
    within_24h: int
    late: int
    open: int
    open_late: int
    no_response_needed: int
    median_seconds: float | None
    """Over the answered messages; None when none was answered."""
    p90_seconds: float | None

    @property
    def share_within_24h(self) -> float | None:
        """Within 24 h among the messages whose fate is known: answered, or late."""
        denominator = self.within_24h + self.late + self.open_late
        return self.within_24h / denominator if denominator else None

    def as_json(self) -> dict[str, Any]:
        return {
            "seller_id": self.seller_id,
            "seller_name": self.seller_name,
            "buyer_messages": self.buyer_messages,
            "within_24h": self.within_24h,
            "late": self.late,
            "open": self.open,
            "open_late": self.open_late,
            "no_response_needed": self.no_response_needed,
            "share_within_24h": self.share_within_24h,
            "median_seconds": self.median_seconds,
            "p90_seconds": self.p90_seconds,
        }


# --- the time difference, per dialect -----------------------------------------


class seconds_between(FunctionElement[float]):
    """``later - earlier`` in seconds, rounded to milliseconds."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


@compiles(seconds_between)
def _seconds_postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return (
        f"CAST(ROUND(CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS NUMERIC), 3)"
        " AS DOUBLE PRECISION)"
    )


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"ROUND((julianday({later}) - julianday({earlier})) * 86400.0, 3)"


# --- the query ---------------------------------------------------------------------


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _passed(msg: FromClause, direction: Direction) -> ColumnElement[bool]:
    """``msg`` (a message table or alias) went ``direction`` and counts: it reached
    its recipient (or is on its way) and a person wrote it."""
    return and_(
        msg.c.direction == direction,
        msg.c.status.in_(PASSED),
        msg.c.auto_submitted.is_(false()),
    )


def response_statement(
    *,
    now: datetime,
    seller_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Any]:
    """The one SELECT behind ``response_stats``: a row per seller."""
    message, conversation, mark_table, seller = (
        _table("message"),
        _table("conversation"),
        _table("response_mark"),
        _table("seller"),
    )
    time_type = message.c.created_at.type
    now_param = bindparam("now", as_utc(now), type_=time_type)

    # 1. Every clock-starting buyer message, with the first reply and mark after it.
    m = message.alias("m")
    r = message.alias("r")
    k = mark_table.alias("k")
    reply_at = (
        select(r.c.created_at)
        .where(
            r.c.conversation_id == m.c.conversation_id,
            r.c.created_at > m.c.created_at,
            _passed(r, Direction.SELLER_TO_BUYER),
        )
        .order_by(r.c.created_at)
        .limit(1)
        .scalar_subquery()
    )
    mark_at = (
        select(k.c.at)
        .where(k.c.conversation_id == m.c.conversation_id, k.c.at > m.c.created_at)
        .order_by(k.c.at)
        .limit(1)
        .scalar_subquery()
    )
    starts = (
        select(
            m.c.conversation_id,
            conversation.c.seller_id,
            m.c.created_at.label("sent_at"),
            reply_at.label("reply_at"),
            mark_at.label("mark_at"),
        )
        .join_from(m, conversation, conversation.c.id == m.c.conversation_id)
        .where(_passed(m, Direction.BUYER_TO_SELLER))
    )
    if seller_id is not None:
        starts = starts.where(conversation.c.seller_id == seller_id)
    if since is not None:
        starts = starts.where(m.c.created_at >= bindparam("since", as_utc(since), type_=time_type))
    if until is not None:
        starts = starts.where(m.c.created_at < bindparam("until", as_utc(until), type_=time_type))
    clocks = starts.cte("clocks")

    # 2. Its stop: the earlier of the two (a reply wins a tie).
    by_mark = and_(
        clocks.c.mark_at.is_not(None),
        or_(clocks.c.reply_at.is_(None), clocks.c.mark_at < clocks.c.reply_at),
    )
    stops = select(
        clocks.c.seller_id,
        clocks.c.conversation_id,
        clocks.c.sent_at,
        case((by_mark, clocks.c.mark_at), else_=clocks.c.reply_at).label("stop_at"),
        case((by_mark, _int(1)), else_=_int(0)).label("by_mark"),
    ).cte("stops")

    # 3. Messages answered together (same conversation, same stop, or both still
    #    open) are timed from the earliest of them.
    grouped = select(
        stops.c.seller_id,
        stops.c.stop_at,
        stops.c.by_mark,
        func.min(stops.c.sent_at)
        .over(partition_by=(stops.c.conversation_id, stops.c.stop_at))
        .label("group_start"),
    ).cte("grouped")
    timed = select(
        grouped.c.seller_id,
        grouped.c.stop_at,
        grouped.c.by_mark,
        seconds_between(func.coalesce(grouped.c.stop_at, now_param), grouped.c.group_start).label(
            "seconds"
        ),
    ).cte("timed")

    # 4. What became of each message.
    outcome = case(
        (timed.c.by_mark == _int(1), _code(NO_RESPONSE_NEEDED)),
        (
            timed.c.stop_at.is_(None),
            case((timed.c.seconds > _int(DAY_SECONDS), _code(OPEN_LATE)), else_=_code(OPEN)),
        ),
        (timed.c.seconds <= _int(DAY_SECONDS), _code(WITHIN)),
        else_=_code(LATE),
    )
    judged = select(timed.c.seller_id, timed.c.seconds, outcome.label("outcome")).cte("judged")

    # 5. Per seller: the counts, and the nearest-rank percentiles of the answered.
    def count(code: str) -> ColumnElement[int]:
        return func.sum(case((judged.c.outcome == _code(code), _int(1)), else_=_int(0)))

    counts = (
        select(
            judged.c.seller_id,
            func.count().label("buyer_messages"),
            count(WITHIN).label(WITHIN),
            count(LATE).label(LATE),
            count(OPEN).label(OPEN),
            count(OPEN_LATE).label(OPEN_LATE),
            count(NO_RESPONSE_NEEDED).label(NO_RESPONSE_NEEDED),
        )
        .group_by(judged.c.seller_id)
        .cte("counts")
    )
    answered = (
        select(
            judged.c.seller_id,
            judged.c.seconds,
            func.row_number()
            .over(partition_by=judged.c.seller_id, order_by=judged.c.seconds)
            .label("place"),
            func.count().over(partition_by=judged.c.seller_id).label("n"),
        )
        .where(judged.c.outcome.in_((_code(WITHIN), _code(LATE))))
        .cte("answered")
    )
    percentiles = (
        select(
            answered.c.seller_id,
            func.max(
                case((answered.c.place == (answered.c.n + _int(1)) // _int(2), answered.c.seconds))
            ).label("median_seconds"),
            func.max(
                case(
                    (
                        answered.c.place == (answered.c.n * _int(9) + _int(9)) // _int(10),
                        answered.c.seconds,
                    )
                )
            ).label("p90_seconds"),
        )
        .group_by(answered.c.seller_id)
        .cte("percentiles")
    )

    # 6. With the seller's name; a seller asked for by id appears even with nothing.
    query = (
        select(
            seller.c.id,
            seller.c.name,
            *(
                func.coalesce(counts.c[name], _int(0)).label(name)
                for name in (
                    "buyer_messages",
                    WITHIN,
                    LATE,
                    OPEN,
                    OPEN_LATE,
                    NO_RESPONSE_NEEDED,
                )
            ),
            percentiles.c.median_seconds,
            percentiles.c.p90_seconds,
        )
        .select_from(
            seller.join(counts, counts.c.seller_id == seller.c.id, isouter=seller_id is not None)
        )
        .outerjoin(percentiles, percentiles.c.seller_id == seller.c.id)
        .order_by(seller.c.id)
    )
    if seller_id is not None:
        query = query.where(seller.c.id == seller_id)
    return query


def _int(value: int) -> ColumnElement[int]:
    """An integer constant written into the SQL (no bound parameter to type)."""
    return literal_column(str(int(value)), Integer)


def _code(outcome: str) -> ColumnElement[str]:
    """An outcome as an SQL string literal (the outcomes are fixed identifiers)."""
    return literal_column(f"'{outcome}'")


def response_stats(
    session: Session,
    *,
    now: datetime,
    seller_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[SellerResponses]:
    """Response-time figures per seller, in seller id order.

    ``now`` times the open clocks (pass ``clock.now()``); ``since`` keeps the
    buyer messages created at or after it, ``until`` those created before it.
    Sellers without buyer messages are left out, except the one asked for with
    ``seller_id``, which gets zeros; an unknown ``seller_id`` raises NotFound (a DirectoryError).
    """
    rows = (
        session.connection()
        .execute(response_statement(now=now, seller_id=seller_id, since=since, until=until))
        .all()
    )
    if seller_id is not None and not rows:
        raise NotFound(f"no seller with id {seller_id}")
    return [_figures(row) for row in rows]


def _figures(row: Sequence[Any]) -> SellerResponses:
    (sid, name, total, within, late, open_, open_late, unneeded, median, p90) = row
    return SellerResponses(
        seller_id=int(sid),
        seller_name=str(name),
        buyer_messages=int(total),
        within_24h=int(within),
        late=int(late),
        open=int(open_),
        open_late=int(open_late),
        no_response_needed=int(unneeded),
        median_seconds=None if median is None else float(median),
        p90_seconds=None if p90 is None else float(p90),
    )


# --- "no response needed" ------------------------------------------------------------


def open_clocks(session: Session, conversation_id: int, *, before: datetime) -> int:
    """Buyer messages of the conversation sent before ``before`` whose clock is
    still running: no counting reply and no mark after them."""
    message, mark_table = _table("message"), _table("response_mark")
    m = message.alias("m")
    r = message.alias("r")
    k = mark_table.alias("k")
    answered = exists().where(
        r.c.conversation_id == m.c.conversation_id,
        r.c.created_at > m.c.created_at,
        _passed(r, Direction.SELLER_TO_BUYER),
    )
    marked = exists().where(k.c.conversation_id == m.c.conversation_id, k.c.at > m.c.created_at)
    query = (
        select(func.count())
        .select_from(m)
        .where(
            m.c.conversation_id == conversation_id,
            _passed(m, Direction.BUYER_TO_SELLER),
            m.c.created_at < bindparam("before", as_utc(before), type_=m.c.created_at.type),
            ~answered,
            ~marked,
        )
    )
    return int(session.connection().execute(query).scalar_one())


def mark_no_response_needed(
    session: Session, conversation_id: int, *, at: datetime | None = None
) -> int:
    """Record the seller's "no response needed" on a conversation, at ``at`` (now).

    Returns how many buyer messages' clocks it stopped (0 when none was
    running: the mark is recorded all the same, and stops nothing later).
    Raises DirectoryError for an unknown conversation.  Meant to run in the
    group-commit writer (``db.write``), which commits it.
    """
    if session.get(Conversation, conversation_id) is None:
        raise DirectoryError(f"no conversation with id {conversation_id}")
    at = as_utc(at) if at is not None else utcnow()
    stopped = open_clocks(session, conversation_id, before=at)
    session.add(ResponseMark(conversation_id=conversation_id, at=at))
    session.flush()
    return stopped


def format_duration(seconds: float) -> str:
    """``2h 10m``, ``30h 0m``; ``12m`` and ``40s`` below an hour and a minute."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def describe(figures: SellerResponses) -> str:
    """One readable line for ``relay responses``."""
    f = figures
    share = f.share_within_24h
    percent = "n/a" if share is None else f"{round(share * 100)}%"
    times = (
        "no answered messages"
        if f.median_seconds is None or f.p90_seconds is None
        else f"median {format_duration(f.median_seconds)}, p90 {format_duration(f.p90_seconds)}"
    )
    return (
        f"seller {f.seller_id} ({f.seller_name}): {f.buyer_messages} buyer"
        f" message{'' if f.buyer_messages == 1 else 's'},"
        f" {f.within_24h} answered within 24 h ({percent}), {f.late} late,"
        f" {f.open_late} open and late, {f.open} open,"
        f" {f.no_response_needed} no response needed; {times}"
    )


def parse_since(text: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO datetime; UTC unless it names its offset.
    Raises ValueError."""
    value = datetime.fromisoformat(text.strip())
    return as_utc(value)


@dataclass(frozen=True, slots=True)
class WeekFigures:
    """One week's buyer messages (Monday 00:00 UTC to the next) and their figures."""

    start: datetime
    figures: SellerResponses


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of the week of ``moment``."""
    day = as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def weekly_stats(
    session: Session, *, now: datetime, seller_id: int, weeks: int
) -> list[WeekFigures]:
    """One seller's figures for each of the last ``weeks`` weeks (this one last),
    each over the buyer messages sent that week and timed up to ``now``: the
    same query as ``response_stats`` with ``since``/``until`` windows, so a week's
    share is what ``relay responses --since`` would say about those messages."""
    this_week = week_start(now)
    result = []
    for back in range(weeks - 1, -1, -1):
        start = this_week - timedelta(weeks=back)
        (figures,) = response_stats(
            session, now=now, seller_id=seller_id, since=start, until=start + timedelta(weeks=1)
        )
        result.append(WeekFigures(start, figures))
    return result


@dataclass(frozen=True, slots=True)
class Waiting:
    """A buyer message whose clock is still running."""

    message_id: int
    conversation_id: int
    subject: str
    sent_at: datetime


def waiting(
    session: Session, *, seller_id: int, since: datetime | None = None, limit: int = 500
) -> list[Waiting]:
    """One seller's buyer messages still waiting for an answer (the ``open`` and
    ``open_late`` clocks: no counting reply and no mark after them), oldest first."""
    message, conversation = _table("message"), _table("conversation")
    m = message.alias("m")
    query = (
        select(m.c.id, m.c.conversation_id, m.c.subject, m.c.created_at)
        .join(conversation, conversation.c.id == m.c.conversation_id)
        .where(
            conversation.c.seller_id == seller_id,
            _passed(m, Direction.BUYER_TO_SELLER),
            _unanswered(m),
        )
        .order_by(m.c.created_at, m.c.id)
        .limit(limit)
    )
    if since is not None:
        query = query.where(
            m.c.created_at >= bindparam("since", as_utc(since), type_=m.c.created_at.type)
        )
    rows = session.connection().execute(query).all()
    return [Waiting(int(r[0]), int(r[1]), str(r[2]), as_utc(r[3])) for r in rows]


__all__ = [
    "DAY_SECONDS",
    "SellerResponses",
    "Waiting",
    "WeekFigures",
    "describe",
    "format_duration",
    "mark_no_response_needed",
    "open_clocks",
    "parse_since",
    "response_statement",
    "response_stats",
    "seconds_between",
    "waiting",
    "week_start",
    "weekly_stats",
]


# --- late answers: the ``response.late`` webhook event ---------------------------

LATE_HORIZON_SECONDS = 7 * DAY_SECONDS
"""Buyer messages older than this are not reported late any more: a relay
started on an old database does not announce its history."""


def _unanswered(msg: FromClause) -> ColumnElement[bool]:
    """No counting reply and no "no response needed" after ``msg`` in its conversation."""
    message, mark_table = _table("message"), _table("response_mark")
    r = message.alias()
    k = mark_table.alias()
    answered = exists().where(
        r.c.conversation_id == msg.c.conversation_id,
        r.c.created_at > msg.c.created_at,
        _passed(r, Direction.SELLER_TO_BUYER),
    )
    marked = exists().where(k.c.conversation_id == msg.c.conversation_id, k.c.at > msg.c.created_at)
    return and_(~answered, ~marked)


@dataclass(frozen=True, slots=True)
class Overdue:
    """The first buyer message of a conversation's unanswered ones, waiting over 24 h."""

    message_id: int
    conversation_id: int
    seller_id: int
    received_at: datetime


def overdue(session: Session, *, now: datetime | None = None, limit: int = 500) -> list[Overdue]:
    """Conversations whose oldest unanswered buyer message passed 24 hours
    (within ``LATE_HORIZON_SECONDS``) and was not reported late yet.

    One report per wait: the clock's group (module docstring) starts at its
    first message, so later messages of the same wait are not reported again.
    """
    now = as_utc(now) if now is not None else utcnow()
    message, event_table = _table("message"), _table("webhook_event")
    m = message.alias("m")
    p = message.alias("p")
    conv = _table("conversation")
    created = m.c.created_at.type
    earlier_waiting = exists().where(
        p.c.conversation_id == m.c.conversation_id,
        p.c.created_at < m.c.created_at,
        _passed(p, Direction.BUYER_TO_SELLER),
        _unanswered(p),
    )
    reported = exists().where(
        event_table.c.type == EventType.RESPONSE_LATE.value, event_table.c.message_id == m.c.id
    )
    query = (
        select(m.c.id, m.c.conversation_id, conv.c.seller_id, m.c.created_at)
        .join(conv, conv.c.id == m.c.conversation_id)
        .where(
            _passed(m, Direction.BUYER_TO_SELLER),
            m.c.created_at <= bindparam("due", now - timedelta(seconds=DAY_SECONDS), type_=created),
            m.c.created_at
            >= bindparam("horizon", now - timedelta(seconds=LATE_HORIZON_SECONDS), type_=created),
            _unanswered(m),
            ~earlier_waiting,
            ~reported,
        )
        .order_by(m.c.id)
        .limit(limit)
    )
    rows = session.connection().execute(query).all()
    return [Overdue(int(r[0]), int(r[1]), int(r[2]), as_utc(r[3])) for r in rows]
