"""Who is calling: the ``Authorization: Bearer KEY`` of each request, and its limit.

``caller`` is the dependency every route but the OpenAPI document takes: it
answers 401 for a missing, unknown or revoked key and 429 (with Retry-After)
for a key past ``api.requests_per_minute``.  The lookup is a database read, so
it runs in the framework's thread pool, never on the event loop.

``admin_writer`` is for an admin route that does one write job, the busiest
(``POST /orders``): it takes the key's scope from ``KeyCache`` and the route's
write job checks, in its own transaction, that the key is still unrevoked
(``keys.check_unrevoked``).  A revoked key is refused at once either way.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

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
        self._lock = threading.Lock()  # cheap, and safe from any thread

    def wait(self, key_id: int) -> float:
        """0 when the request may go ahead (and counts it), else the seconds to wait."""
        with self._lock:
            if self._window.record(str(key_id)):
                return 0.0
            return self._window.wait(str(key_id))


class KeyCache:
    """Valid keys' id and scope, for ``admin_writer``: the answer of the last lookup.

    The lookup (a pool thread, a session, a query) was a sixth of the CPU of
    a created order.  An entry may outlive the key's revocation, by
    ``relay api-key revoke`` in another process: only routes whose write job
    checks the key again in its transaction may trust it, and the entry is
    dropped when that check fails.  Only admin keys are kept (the only ones
    ``admin_writer`` lets through): a revoked seller key must get its 401, not
    a 403.  Unknown and revoked keys are never kept, so a new key works at
    once and a wrong one is looked up every time.
    Requests that miss together share one lookup.  One per app, used from the
    event loop that serves it.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._valid: dict[str, tuple[int, Scope]] = {}
        self._pending: dict[str, asyncio.Task[tuple[int, Scope] | None]] = {}

    async def lookup(self, key: str) -> tuple[int, Scope] | None:
        """The id and scope of a key that was valid when last looked up, or None."""
        digest = keys.key_hash(key)
        known = self._valid.get(digest)
        if known is not None:
            return known
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.ensure_future(run_in_threadpool(self.db.call, keys.scope_of, key))
            self._pending[digest] = task
            task.add_done_callback(lambda done: self._store(digest, done))
        # shielded: a caller that goes away must not cancel the others' lookup
        return await asyncio.shield(task)

    def forget(self, key_id: int) -> None:
        """Drop the key: its write job found it revoked."""
        for digest in [d for d, (i, _) in self._valid.items() if i == key_id]:
            del self._valid[digest]

    def _store(self, digest: str, done: asyncio.Task[tuple[int, Scope] | None]) -> None:
        self._pending.pop(digest, None)
        if done.cancelled() or done.exception() is not None:
            return
        found = done.result()
        if found is None or not found[1].is_admin:
            return
        if len(self._valid) > 10_000:  # only valid keys get here: a bound, not a policy
            self._valid.clear()
        self._valid[digest] = found


def _bearer(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(Kind.UNAUTHORIZED, "send Authorization: Bearer <key>")
    return key.strip()


INVALID = "the key is not valid (unknown or revoked)"


def _limited(request: Request, key_id: int) -> None:
    request.state.api_key_id = key_id  # the decisions' log names the key
    limit: RateLimit = request.app.state.rate_limit
    wait = limit.wait(key_id)
    if wait > 0:
        raise Problem(
            Kind.RATE_LIMITED,
            f"more than {limit.per_minute} requests in a minute",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Scope:
    key = _bearer(authorization)
    db: Database = request.app.state.db
    found = db.call(keys.scope_of, key)
    if found is None:
        raise Problem(Kind.UNAUTHORIZED, INVALID)
    key_id, scope = found
    _limited(request, key_id)
    return scope


Caller = Annotated[Scope, Depends(caller)]


async def admin(scope: Caller) -> Scope:
    """For what only the marketplace itself may do (create sellers, orders...).

    ``async`` although it awaits nothing: a plain function would cost a round
    trip through the thread pool for a comparison."""
    if not scope.is_admin:
        raise Problem(Kind.FORBIDDEN, f"a {scope.role.value} key may not do this")
    return scope


Admin = Annotated[Scope, Depends(admin)]


async def admin_writer(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> int:
    """``admin`` for a route whose write job calls ``keys.check_unrevoked``: the
    key's id, its scope from ``KeyCache`` (no lookup for a known key)."""
    cache: KeyCache = request.app.state.keys
    found = await cache.lookup(_bearer(authorization))
    if found is None:
        raise Problem(Kind.UNAUTHORIZED, INVALID)
    key_id, scope = found
    _limited(request, key_id)
    if not scope.is_admin:
        raise Problem(Kind.FORBIDDEN, f"a {scope.role.value} key may not do this")
    return key_id


AdminWriter = Annotated[int, Depends(admin_writer)]
"""The admin key's id, to check in the route's write job (``keys.check_unrevoked``)."""
