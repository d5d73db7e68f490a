"""The relay's one notion of "now", in UTC.

Everything that stamps or compares a time (messages, deliveries, leases, rate
limits, response clocks, retention) asks ``now()``.  Tests move it forward with
``advance`` to play a timeline of days in seconds, through the same code paths
that run in production; time still flows between the jumps, so the delivery
queue keeps working.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_offset = timedelta(0)


def now() -> datetime:
    """The current time, timezone-aware UTC (plus any test offset)."""
    return datetime.now(UTC) + _offset


def as_utc(value: datetime) -> datetime:
    """``value`` as aware UTC.  SQLite hands stored times back naive: they are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def advance(delta: timedelta) -> None:
    """Move the clock forward (tests only; never backwards: times must not repeat)."""
    global _offset
    if delta < timedelta(0):
        raise ValueError("the clock only moves forward")
    with _lock:
        _offset += delta


def reset() -> None:
    """Back to real time (tests only)."""
    global _offset
    with _lock:
        _offset = timedelta(0)
