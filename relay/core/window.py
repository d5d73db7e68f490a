"""A sliding window of events per key: the in-memory rate limit of every listener.

The SMTP front counts connections and refused recipients per client IP with it
(``relay.inbound.limits``), the HTTP API requests per key (``relay.api.auth``).
Not thread-safe: a caller that shares one across threads holds a lock.
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

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may have an event again (0: now)."""
        events = self._recent(key)
        if len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.window - self.clock())

    def record(self, key: str) -> bool:
        """Count an event; False (and not counted) if the limit was already reached."""
        events = self._recent(key)
        if len(events) >= self.limit:
            return False
        events.append(self.clock())
        return True
