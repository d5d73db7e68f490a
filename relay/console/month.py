"""The start-date picker as a month: the calendar's days laid out in weeks.

The days and their colours are ``relay.campaigns.calendar``'s (the API's
``GET /brands/{id}/calendar`` and ``relay campaign calendar``); this module
only arranges one month of them in weeks from Monday, says each day's reasons
in the reader's language (``wording``), and groups the grey days' reasons
so that they can be read as text under the grid (a disabled date cannot take
the keyboard's focus, so its reason must be readable without it).
"""

from __future__ import annotations

import calendar as month_days
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlmodel import Session

from relay.campaigns import calendar
from relay.campaigns.calendar import Colour
from relay.console import wording
from relay.console.i18n import Formats

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str | None) -> date | None:
    """``YYYY-MM`` → its first day (None if it is not one)."""
    found = _MONTH.match(text or "")
    if found is None:
        return None
    year, number = int(found[1]), int(found[2])
    if not (2000 <= year <= 2100 and 1 <= number <= 12):
        return None
    return date(year, number, 1)


def shift(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(slots=True)
class Cell:
    day: date
    colour: Colour
    reasons: list[str]
    """Why it cannot be chosen, translated."""
    collisions: list[calendar.Collision]
    colliding_followers: int
    chosen: bool

    @property
    def key(self) -> str:
        return self.day.isoformat()


@dataclass(slots=True)
class Grey:
    """Consecutive grey days that share their reasons."""

    first: date
    last: date
    reasons: list[str]


@dataclass(slots=True)
class Month:
    first: date
    weeks: list[list[Cell | None]]
    previous: str
    next: str
    weekdays: list[date]
    grey: list[Grey] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.first:%Y-%m}"

    @property
    def conflicts(self) -> list[Cell]:
        return [c for week in self.weeks for c in week if c and c.colour is Colour.CONFLICT]


def load(
    session: Session,
    brand_id: int,
    first: date,
    *,
    now: datetime,
    campaign_id: int | None,
    event_id: int | None,
    promotion_id: int | None,
) -> list[calendar.Day]:
    """The calendar's days of the month that starts on ``first``."""
    days = month_days.monthrange(first.year, first.month)[1]
    return calendar.calendar(
        session,
        brand_id,
        first,
        days,
        now=now,
        campaign_id=campaign_id,
        event_id=event_id,
        promotion_id=promotion_id,
    )


def lay_out(
    days: list[calendar.Day],
    first: date,
    chosen: date | None,
    gettext: Callable[[str], str],
    fmt: Formats,
) -> Month:
    cells = [
        Cell(
            d.day,
            d.colour,
            [wording.sentence(r, gettext, fmt) for r in d.reasons],
            d.collisions,
            d.colliding_followers,
            d.day == chosen,
        )
        for d in days
    ]
    lead: list[Cell | None] = [None] * first.weekday()
    slots = lead + list(cells)
    slots += [None] * (-len(slots) % 7)
    weeks = [slots[i : i + 7] for i in range(0, len(slots), 7)]
    monday = first - timedelta(days=first.weekday())
    grey: list[Grey] = []
    for cell in cells:
        if cell.colour is not Colour.UNAVAILABLE:
            continue
        last = grey[-1] if grey else None
        if last and last.reasons == cell.reasons and last.last + timedelta(days=1) == cell.day:
            last.last = cell.day
        else:
            grey.append(Grey(cell.day, cell.day, cell.reasons))
    return Month(
        first=first,
        weeks=weeks,
        previous=f"{shift(first, -1):%Y-%m}",
        next=f"{shift(first, 1):%Y-%m}",
        weekdays=[monday + timedelta(days=i) for i in range(7)],
        grey=grey,
    )
