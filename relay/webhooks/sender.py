"""The loop that sends webhook events: fan out, claim, POST, record, repeat.

One runs in every ``relay serve`` process (``webhooks.dispatch``); the leases
of ``outbox`` let any number of them, on any number of hosts sharing one
PostgreSQL database, work through the same outbox.  Database work goes
through the writer thread or a worker thread (``Database.awrite`` /
``run``), and HTTP through httpx's asyncio client: the SMTP server's event loop
never waits for either.  A pass looks (cheap reads) before it writes, so an
idle relay costs the database two indexed reads a second.

Each attempt is a POST of the event's JSON, signed (``signing``), with
``webhooks.timeout`` for the whole exchange.  A 2xx answer is success;
anything else (another status, a redirect, a refused connection, a timeout) is
a failed attempt, retried with backoff.  The answer's body is never read.
Requests go straight to the endpoint: proxies from the environment are not
used (``trust_env=False``), so an event goes exactly where it was registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import httpx

from relay.core import metrics
from relay.core.config import WebhooksConfig
from relay.delivery.spool import worker_id
from relay.ops.response_times import overdue
from relay.storage.db import Database, StorageUnavailable
from relay.storage.models import utcnow
from relay.webhooks import outbox
from relay.webhooks.signing import HEADER, sign

log = logging.getLogger("relay.webhooks")

USER_AGENT = "marketplace-relay-webhooks/1"
KEEP_DAYS = 30
"""Events older than this, with nothing pending, are deleted (once an hour)."""
PRUNE_EVERY = 3600.0
AHEAD = 4
"""Deliveries claimed per slot (``webhooks.concurrency``) at most."""


class WebhookSender:
    """Sends due webhook deliveries until ``stop()``."""

    def __init__(self, config: WebhooksConfig, db: Database) -> None:
        self.config = config
        self.db = db
        self.worker = worker_id()
        self.ahead = AHEAD * config.concurrency
        """Deliveries claimed at most, in flight or waiting for a slot: claiming
        a batch ahead keeps the slots busy with one claim per batch, not one
        per event."""
        self.lease = (AHEAD + 1) * config.timeout + 30
        """Longer than a claimed delivery can wait for its slot and take, so a
        live sender needs no renewals."""
        self._slots = asyncio.Semaphore(config.concurrency)
        self._stop = asyncio.Event()
        self._room = asyncio.Event()
        """Set when the claimed deliveries fell to half of ``ahead``."""
        self._inflight: set[asyncio.Task[None]] = set()
        self._delivered: list[int] = []
        """Successes not recorded yet: the first of a batch records them all."""
        self._next_late_check = 0.0
        self._next_prune = time.monotonic() + 60
        self.passes = 0
        """Passes completed: a test waits for one after a change, not for a time."""

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        try:
            released = await self.db.awrite(outbox.release_dead_claims)
            if released:
                log.info("released %d webhook deliveries claimed by a previous run", released)
        except StorageUnavailable as exc:
            log.warning("database unavailable at start: %s", exc)
        async with httpx.AsyncClient(
            timeout=self.config.timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=self.config.concurrency),
        ) as client:
            while not self._stop.is_set():
                busy = False
                try:
                    busy = await self._pass(client)
                except StorageUnavailable as exc:
                    log.warning("webhooks: database unavailable: %s", exc)
                self.passes += 1
                if not busy:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.config.poll_interval)
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _pass(self, client: httpx.AsyncClient) -> bool:
        """One look at the outbox; True when there may be more to do at once."""
        now = time.monotonic()
        if now >= self._next_late_check:
            self._next_late_check = now + self.config.late_check_interval
            found = await self.db.run(overdue)
            late = await self.db.awrite(outbox.report_late, found) if found else 0
            if late:
                log.info("%d buyer messages passed 24 hours unanswered", late)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            before = utcnow() - timedelta(days=KEEP_DAYS)
            await self.db.awrite(outbox.prune, before=before)
        fanned = 0
        if await self.db.run(outbox.has_unfanned):
            fanned = await self.db.awrite(outbox.fan_out)
        free = self.ahead - len(self._inflight)
        claimed: list[outbox.Due] = []
        if free > 0 and await self.db.run(outbox.has_due):
            claimed = await self.db.awrite(outbox.claim, self.worker, limit=free, lease=self.lease)
        for due in claimed:
            task = asyncio.create_task(self._deliver(client, due))
            self._inflight.add(task)
            task.add_done_callback(self._finished)
        if len(self._inflight) > self.ahead // 2:
            self._room.clear()
            await self._room.wait()  # claim again when half of the batch is done
        return fanned > 0 or bool(claimed)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if len(self._inflight) <= self.ahead // 2:
            self._room.set()

    async def _deliver(self, client: httpx.AsyncClient, due: outbox.Due) -> None:
        async with self._slots:
            error = await self._post(client, due)
        if not error:
            self._delivered.append(due.id)
            if len(self._delivered) == 1:  # the first of a batch: write it soon
                await asyncio.sleep(0)  # let the others that finished with it join
                await self._record_delivered()
            return
        try:
            gave_up = await self.db.awrite(
                outbox.record_failed, due.id, self.worker, error, config=self.config
            )
        except StorageUnavailable as exc:
            # The lease runs out and the delivery is tried again: at least once.
            log.warning("webhook delivery %s: outcome not recorded: %s", due.id, exc)
            return
        metrics.WEBHOOK_ATTEMPTS.labels("gave_up" if gave_up else "retried").inc()
        if gave_up:
            log.warning(
                "webhook %s: gave up on event %s after %d attempts: %s",
                due.endpoint_id,
                due.event_id,
                due.attempts + 1,
                error,
            )
        else:
            log.info("webhook %s: event %s not taken: %s", due.endpoint_id, due.event_id, error)

    async def _record_delivered(self) -> None:
        """Record every success collected so far, in one statement."""
        ids, self._delivered = self._delivered, []
        try:
            await self.db.awrite(outbox.record_delivered, ids, self.worker)
        except StorageUnavailable as exc:
            log.warning("webhook deliveries %s: outcome not recorded: %s", ids, exc)
            return
        metrics.WEBHOOK_ATTEMPTS.labels("delivered").inc(len(ids))

    async def _post(self, client: httpx.AsyncClient, due: outbox.Due) -> str:
        """POST one event; "" on a 2xx answer, else what went wrong."""
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(due.secret, due.body),
            "Relay-Event-Id": due.event_id,
            "Relay-Event-Type": due.event_type,
        }
        try:
            async with client.stream("POST", due.url, content=due.body, headers=headers) as answer:
                status = answer.status_code
        except httpx.TimeoutException:
            return f"no answer within {self.config.timeout:g} s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        return "" if 200 <= status < 300 else f"HTTP {status}"
