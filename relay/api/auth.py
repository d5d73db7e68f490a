"""Who is calling: the ``Authorization: Bearer KEY`` of each request, and its limit.

``caller`` is the dependency every route but the OpenAPI document takes: it
answers 401 for a missing, unknown or revoked key and 429 (with Retry-After)
for a key past ``api.requests_per_minute``.  The lookup is a database read, so
it runs in the framework's thread pool, never on the event loop.
"""

from __future__ import annotations

import math
import threading
from typing import Annotated

from fastapi import Depends, Header, Request

from relay.api import keys
from relay.api.problems import Kind, Problem
from relay.core.scopes import Scope
from relay.core.window import SlidingWindow
from relay.storage.db import Database


class RateLimit:
    """At most ``per_minute`` requests per key in any 60 seconds."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._window = SlidingWindow(per_minute, 60.0)
        self._lock = threading.Lock()  # routes run in the framework's thread pool

    def wait(self, key_id: int) -> float:
        """0 when the request may go ahead (and counts it), else the seconds to wait."""
        with self._lock:
            if self._window.record(str(key_id)):
                return 0.0
            return self._window.wait(str(key_id))


def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Scope:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(Kind.UNAUTHORIZED, "send Authorization: Bearer <key>")
    db: Database = request.app.state.db
    found = db.call(keys.scope_of, key.strip())
    if found is None:
        raise Problem(Kind.UNAUTHORIZED, "the key is not valid (unknown or revoked)")
    key_id, scope = found
    request.state.api_key_id = key_id  # the decisions' log names the key
    limit: RateLimit = request.app.state.rate_limit
    wait = limit.wait(key_id)
    if wait > 0:
        raise Problem(
            Kind.RATE_LIMITED,
            f"more than {limit.per_minute} requests in a minute",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return scope


Caller = Annotated[Scope, Depends(caller)]


def admin(scope: Caller) -> Scope:
    """For what only the marketplace itself may do (create sellers, orders...)."""
    if not scope.is_admin:
        raise Problem(Kind.FORBIDDEN, f"a {scope.role.value} key may not do this")
    return scope


Admin = Annotated[Scope, Depends(admin)]
