"""The marketplace's campaign rules, in one place.

Every decision about dates and promotions asks this module: creating and
submitting a campaign, approving it, the date picker (``calendar``), choosing
a promotion, and the dispatcher before it starts and before each batch.

- **Review lead.** Moderation takes at least ``REVIEW_HOURS`` (72 h): the start
  date (00:00 UTC) must be that far away when the campaign is created and
  when it is submitted.
- **Delivery window.** A campaign is delivered over ``WINDOW_DAYS`` (5) days
  from 00:00 UTC of its start date; with a promotion, the window is cut to the
  promotion's own period, so no message advertises a promotion that has not
  started or has ended.
- **Shopping event.** A themed campaign's start date lies within the event's
  dates (inclusive).
- **Promotion.** The start date lies within the promotion's period (the day
  overlaps it), and the promotion must be *eligible*: for the campaign's main
  product, approved (so neither pending, rejected nor cancelled), valid (ends
  after it starts, not ended yet), and overlapping the delivery window.
- **Frequency.** A brand reaches a customer at most once every
  ``FREQUENCY_DAYS`` (7) days, checked when each message is sent.
- **Each follower's place in the window** is fixed by a hash of brand and
  customer (``slot``): the messages of a campaign go out at a steady rate over
  the window, and one customer is reached at the same point of every window of
  the brand, so two campaigns whose start dates are 7 days or more apart never
  collide, and two that are closer always do (the calendar relies on it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from relay.campaigns.models import Promotion, PromotionStatus, ShoppingEvent
from relay.core.clock import as_utc

REVIEW_HOURS = 72
WINDOW_DAYS = 5
FREQUENCY_DAYS = 7
MAX_EXTRA_PRODUCTS = 4

REVIEW_LEAD = timedelta(hours=REVIEW_HOURS)
WINDOW = timedelta(days=WINDOW_DAYS)
FREQUENCY = timedelta(days=FREQUENCY_DAYS)


def day_start(day: date) -> datetime:
    """00:00 UTC of ``day``."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def earliest_start(now: datetime) -> date:
    """The first start date that leaves moderation its 72 hours."""
    first = (as_utc(now) + REVIEW_LEAD).date()
    return first if day_start(first) >= as_utc(now) + REVIEW_LEAD else first + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def delivery_window(start_on: date, promotion: Promotion | None = None) -> Window:
    """When the campaign's messages go out: 5 days from the start date, cut to
    the promotion's period when it shows one."""
    start, end = day_start(start_on), day_start(start_on) + WINDOW
    if promotion is not None:
        start = max(start, as_utc(promotion.starts_at))
        end = min(end, as_utc(promotion.ends_at))
    return Window(start, end)


def lead_problem(start_on: date, now: datetime) -> str | None:
    if day_start(start_on) < as_utc(now) + REVIEW_LEAD:
        return (
            f"too soon: review takes {REVIEW_HOURS} hours (the earliest start date is"
            f" {earliest_start(now)})"
        )
    return None


def event_problem(start_on: date, event: ShoppingEvent | None) -> str | None:
    if event is not None and not event.starts_on <= start_on <= event.ends_on:
        return f"outside the shopping event {event.name!r} ({event.starts_on} to {event.ends_on})"
    return None


def promotion_period_problem(start_on: date, promotion: Promotion | None) -> str | None:
    if promotion is None:
        return None
    day = Window(day_start(start_on), day_start(start_on) + timedelta(days=1))
    starts, ends = as_utc(promotion.starts_at), as_utc(promotion.ends_at)
    if not (starts < day.end and ends > day.start):
        return f"outside promotion {promotion.id}'s period ({_when(starts)} to {_when(ends)})"
    return None


def date_problems(
    start_on: date,
    *,
    now: datetime,
    event: ShoppingEvent | None = None,
    promotion: Promotion | None = None,
    check_lead: bool = True,
) -> list[str]:
    """Why ``start_on`` cannot be chosen (empty: it can), in words that do not
    repeat the date (the calendar groups days by them)."""
    problems = [
        lead_problem(start_on, now) if check_lead else None,
        event_problem(start_on, event),
        promotion_period_problem(start_on, promotion),
    ]
    return [p for p in problems if p]


def standing_problems(promotion: Promotion, *, main_product_id: int, now: datetime) -> list[str]:
    """Why ``promotion`` cannot be shown by a campaign on ``main_product_id``,
    whatever its start date: another product's, not approved, not valid."""
    problems: list[str] = []
    if promotion.product_id != main_product_id:
        problems.append(f"promotion {promotion.id} is for another product")
    if promotion.status is not PromotionStatus.APPROVED:
        problems.append(
            f"promotion {promotion.id} is {promotion.status.value}"
            + (" (not approved yet)" if promotion.status is PromotionStatus.PENDING else "")
        )
    starts, ends = as_utc(promotion.starts_at), as_utc(promotion.ends_at)
    if ends <= starts:
        problems.append(f"promotion {promotion.id} ends before it starts")
    elif ends <= as_utc(now):
        problems.append(f"promotion {promotion.id} has ended ({_when(ends)})")
    return problems


def promotion_problems(
    promotion: Promotion, *, main_product_id: int, start_on: date, now: datetime
) -> list[str]:
    """Why ``promotion`` is not eligible for a campaign on ``main_product_id``
    starting ``start_on`` (empty: it is): ``standing_problems``, and it must
    overlap the delivery window."""
    problems = standing_problems(promotion, main_product_id=main_product_id, now=now)
    if delivery_window(start_on, promotion).empty:
        starts, ends = as_utc(promotion.starts_at), as_utc(promotion.ends_at)
        problems.append(
            f"promotion {promotion.id} ({_when(starts)} to {_when(ends)}) does not overlap"
            f" the delivery window {start_on} + {WINDOW_DAYS} days"
        )
    return problems


def slot(brand_id: int, buyer_id: int, window: Window) -> datetime:
    """When in ``window`` this customer's message goes out (see the module's
    docstring): the same fraction of every window of the brand."""
    digest = hashlib.sha256(f"{brand_id}:{buyer_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return window.start + (window.end - window.start) * fraction


def collides(start_on: date, other_start_on: date) -> bool:
    """Whether two campaigns of one brand reach a shared follower less than 7
    days apart (exact for uncut windows, because of ``slot``)."""
    return abs((start_on - other_start_on).days) < FREQUENCY_DAYS


def _when(value: datetime) -> str:
    value = as_utc(value)
    if value.time() == time(0):
        return value.date().isoformat()
    return value.strftime("%Y-%m-%d %H:%M UTC")
