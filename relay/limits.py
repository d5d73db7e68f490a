"""Abuse limits kept in memory: connection counts and per-IP sliding windows.

Limits that must hold across processes (messages per sender and per
conversation) are counted in the database instead (``store.recent_messages``).
These are per process: several relay processes each allow ``max_connections``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds.

    Memory is bounded: at most ``max_keys`` keys are remembered, the least
    recently used forgotten first (a flood of addresses cannot exhaust memory).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        horizon = self.clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        return events

    def exceeded(self, key: str) -> bool:
        """Whether ``key`` already used up its events in the current window."""
        return len(self._recent(key)) >= self.limit

    def record(self, key: str) -> bool:
        """Count an event; False (and not counted) if the limit was already reached."""
        events = self._recent(key)
        if len(events) >= self.limit:
            return False
        events.append(self.clock())
        return True


class ConnectionGate:
    """Admission of new SMTP sessions: a concurrency cap and a per-IP rate."""

    def __init__(self, max_connections: int, per_ip_per_minute: int) -> None:
        self.max_connections = max_connections
        self.active = 0
        self.rate = SlidingWindow(per_ip_per_minute, 60.0)

    def admit(self, ip: str) -> str | None:
        """None if the session may start, else why not (for the log)."""
        if self.active >= self.max_connections:
            return f"{self.active} sessions open (limits.max_connections)"
        if not self.rate.record(ip):
            return f"more than {self.rate.limit} sessions a minute (limits.connections_per_ip)"
        self.active += 1
        return None

    def release(self) -> None:
        self.active -= 1
