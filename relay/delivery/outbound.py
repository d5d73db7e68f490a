"""The delivery worker: claim → DKIM-sign → hand over → record the outcome.

Two transports: a smarthost over SMTP (aiosmtplib), or a local Maildir for
trying the relay out.  Each attempt ends in exactly one of delivered, deferred
(4xx, 552, connection trouble: retried with backoff) or failed (5xx: one notice
to the sender).  The database is only touched through ``Database.awrite``, signing
and Maildir writes run in threads: the event loop that serves SMTP never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib
import aiosmtplib.protocol
import aiosmtplib.smtp

from relay.core import metrics
from relay.core.config import RelayConfig, SmarthostConfig
from relay.core.durable import write_file
from relay.core.logs import event, redact
from relay.core.tls import client_context
from relay.delivery import spool
from relay.delivery.dkim_sign import Signer
from relay.storage.archive import Archive
from relay.storage.db import Database, StorageUnavailable

log = logging.getLogger("relay.outbound")

_AIOSMTPLIB_LINE_ENDS = aiosmtplib.protocol.normalize_message_line_endings


def _line_ends(message: bytes) -> bytes:
    """aiosmtplib's ``normalize_message_line_endings``, without its regex where it
    would change nothing.

    aiosmtplib rewrites every line end of a message with a regex before DATA, and
    again to compute the SIZE parameter: 5 ms of the event loop's time for a
    200 KB copy, whose line ends are all CRLF already (the relay writes them
    so).  Three byte counts, in C, tell that case; any other message takes
    aiosmtplib's own function, so the result is the same for every message
    (``tests/test_delivery.py`` compares the two)."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf and message.endswith(b"\r\n"):
        return message
    normalized: bytes = _AIOSMTPLIB_LINE_ENDS(message)
    return normalized


aiosmtplib.protocol.normalize_message_line_endings = _line_ends
aiosmtplib.smtp.normalize_message_line_endings = _line_ends  # type: ignore[attr-defined]  # SIZE


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    reply: str


class DeliveryError(Exception):
    """A failed attempt; ``permanent`` says whether retrying could help."""

    def __init__(self, reply: str, *, permanent: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent


def is_permanent(code: int) -> bool:
    """RFC 5321 §4.2.1: 5xx is permanent; 552 is retried (§4.5.3.1.10 says a
    552 to RCPT was historically used for "too many recipients")."""
    return 500 <= code < 600 and code != 552


class Transport(Protocol):
    async def send(self, envelope_from: str, recipient: str, data: bytes) -> DeliveryResult: ...

    async def close(self) -> None: ...


class SmtpTransport:
    """Hands messages to the smarthost with aiosmtplib, over reused connections.

    A connection that delivered a message goes back to a pool of idle ones (at
    most ``max_idle``, each kept for ``idle_timeout`` seconds), as Postfix's
    connection cache does: connecting, the greeting, EHLO and STARTTLS cost more
    than the message itself.  A connection that ended in an error reply is
    closed, not reused; a reused one the smarthost has meanwhile dropped is
    replaced once, at no cost to the delivery.
    """

    def __init__(
        self,
        config: SmarthostConfig,
        *,
        local_hostname: str,
        max_idle: int = 8,
        idle_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.local_hostname = local_hostname
        self.tls_context = client_context(config) if config.starttls else None
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self.config
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            start_tls=cfg.starttls,
            tls_context=self.tls_context,
            username=cfg.username,
            password=cfg.password,
            timeout=cfg.timeout,
            local_hostname=self.local_hostname,
        )

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            since, client = self._idle.pop()
            if client.is_connected and now - since < self.idle_timeout:
                return client
            _close(client)
        return None

    async def send(self, envelope_from: str, recipient: str, data: bytes) -> DeliveryResult:
        reused = self._take_idle()
        if reused is not None:
            try:
                return await self._send(reused, envelope_from, recipient, data)
            except _Dropped:
                pass  # closed by the smarthost while idle: try a fresh connection
        client = self._client()
        try:
            await client.connect()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            _close(client)
            raise DeliveryError(f"connection problem: {exc}", permanent=False) from None
        try:
            return await self._send(client, envelope_from, recipient, data)
        except _Dropped as exc:
            raise DeliveryError(f"connection problem: {exc.__cause__}", permanent=False) from None

    async def _send(
        self, client: aiosmtplib.SMTP, envelope_from: str, recipient: str, data: bytes
    ) -> DeliveryResult:
        options = ["SMTPUTF8"] if not recipient.isascii() else []
        # ``client.sendmail`` rather than ``aiosmtplib.send``, which refuses the null
        # envelope sender that notices must use (RFC 3834 §3.3, RFC 5321 §4.5.5).
        try:
            errors, response = await client.sendmail(
                envelope_from, [recipient], data, mail_options=options
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            _close(client)
            refused = exc.recipients[0]
            raise DeliveryError(
                f"{refused.code} {refused.message}", permanent=is_permanent(refused.code)
            ) from None
        except aiosmtplib.SMTPServerDisconnected as exc:
            _close(client)
            raise _Dropped() from exc
        except aiosmtplib.SMTPResponseException as exc:
            _close(client)
            raise DeliveryError(
                f"{exc.code} {exc.message}", permanent=is_permanent(exc.code)
            ) from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            _close(client)
            raise DeliveryError(f"connection problem: {exc}", permanent=False) from None
        if recipient in errors:
            _close(client)
            partial = errors[recipient]
            raise DeliveryError(
                f"{partial.code} {partial.message}", permanent=is_permanent(partial.code)
            )
        if len(self._idle) < self.max_idle:
            self._idle.append((time.monotonic(), client))
        else:
            _close(client)
        return DeliveryResult(response)

    async def close(self) -> None:
        """Say QUIT on every idle connection (at shutdown)."""
        idle, self._idle = self._idle, []
        for _since, client in idle:
            with contextlib.suppress(Exception):
                await client.quit()
            _close(client)


class _Dropped(Exception):
    """The connection was closed under us (``__cause__`` says how)."""


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        client.close()


class MaildirTransport:
    """Delivers into one local Maildir (``new/``), the way a local delivery agent does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, envelope_from: str, recipient: str, data: bytes) -> DeliveryResult:
        try:
            name = await asyncio.to_thread(self._write, envelope_from, recipient, data)
        except OSError as exc:
            raise DeliveryError(f"cannot write to the Maildir: {exc}", permanent=False) from None
        return DeliveryResult(f"250 delivered to Maildir as {name}")

    def _write(self, envelope_from: str, recipient: str, data: bytes) -> str:
        (self.path / "cur").mkdir(parents=True, exist_ok=True)
        name = f"{time.time():.6f}.{os.getpid()}_{secrets.token_hex(6)}.{socket.gethostname()}"
        trace = f"Return-Path: <{envelope_from}>\r\nDelivered-To: {recipient}\r\n".encode()
        content = (trace + data).replace(b"\r\n", b"\n")
        write_file(self.path / "new" / name, content, tmp=self.path / "tmp" / name)
        return name

    async def close(self) -> None:
        """Nothing is held open between deliveries."""


def make_transport(config: RelayConfig) -> Transport:
    if config.delivery.mode == "smtp":
        return SmtpTransport(
            config.delivery.smtp,
            local_hostname=config.smtp.hostname,
            max_idle=config.delivery.concurrency,
        )
    return MaildirTransport(config.delivery.maildir)


class OutboundWorker:
    """Delivers due queue rows until ``stop()``; wakes at once when ``wake()`` is called."""

    def __init__(
        self,
        *,
        config: RelayConfig,
        db: Database,
        archive: Archive,
        transport: Transport,
        signer: Signer | None,
    ) -> None:
        self.config = config
        self.db = db
        self.archive = archive
        self.transport = transport
        self.signer = signer
        self.worker = spool.worker_id()
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._sending: set[int] = set()
        """Ids of the deliveries this worker holds a lease on and is working on."""
        self._slots = asyncio.Semaphore(config.delivery.concurrency)
        self.passes = 0
        """Claims of due deliveries made so far, whatever they found.  With
        ``in_flight`` it tells "nothing was due when the worker last looked" from
        "it has not looked yet": a claim counted after some moment saw the queue
        as it was at that moment or later, and what it took is in ``in_flight``
        by the time it is counted."""

    @property
    def in_flight(self) -> int:
        """Deliveries this worker has claimed and not yet finished with.

        Zero here and no pending delivery in the database means the relay will
        send nothing more until new mail is queued: the state in which a check
        that something was *not* delivered proves it, instead of hoping that
        a wait was long enough."""
        return len(self._inflight)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Resume everything undelivered, then loop until stopped; waits for in-flight work."""
        try:
            released = await self.db.awrite(spool.release_dead_claims)
            if released:
                log.info("released %d deliveries claimed by a previous run", released)
        except StorageUnavailable as exc:
            log.warning("database unavailable at start: %s", exc)
        renewer = asyncio.create_task(self._renew_leases())
        try:
            await self._loop()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
        finally:
            renewer.cancel()
        await self.transport.close()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self.config.delivery.concurrency - len(self._inflight)
            claimed: list[spool.Claimed] = []
            failed = False
            if free > 0:
                try:
                    claimed = await self.db.awrite(
                        spool.claim,
                        self.worker,
                        limit=free,
                        lease=self.config.delivery.claim_timeout,
                        domain=self.config.marketplace.domain,
                    )
                except StorageUnavailable as exc:
                    log.warning("cannot claim deliveries: %s", exc)
                    failed = True
            for item in claimed:
                task = asyncio.create_task(self._deliver(item))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if free > 0 and not failed:
                self.passes += 1
            if claimed and len(claimed) == free:
                await self._wait(0)  # there may be more due: loop at once when a slot frees
                continue
            await self._wait(self.config.delivery.poll_interval)

    async def _renew_leases(self) -> None:
        """Every third of a lease, extend the leases of the deliveries in flight."""
        lease = self.config.delivery.claim_timeout
        while True:
            await asyncio.sleep(lease / 3)
            if not self._sending:
                continue
            try:
                await self.db.awrite(
                    spool.renew_claims, self.worker, sorted(self._sending), lease=lease
                )
            except StorageUnavailable as exc:
                log.warning("cannot renew delivery leases: %s", exc)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())

    async def _wait(self, timeout: float) -> None:
        if timeout <= 0 and self.config.delivery.concurrency > len(self._inflight):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout or None)

    async def _deliver(self, item: spool.Claimed) -> None:
        self._sending.add(item.id)
        try:
            await self._attempt(item)
        finally:
            self._sending.discard(item.id)

    async def _attempt(self, item: spool.Claimed) -> None:
        async with self._slots:
            started = time.perf_counter()
            try:
                data = await asyncio.to_thread(self.archive.read, item.path)
                if self.signer is not None:
                    data = await asyncio.to_thread(self.signer.sign, data)
                result = await self.transport.send(item.envelope_from, item.recipient, data)
            except DeliveryError as exc:
                await self._record_failure(item, exc, started)
                return
            except Exception as exc:  # a bug or an unforeseen error: retry, never drop
                log.exception("delivery %s: unexpected error", item.id)
                await self._record_failure(
                    item, DeliveryError(f"local problem: {exc}", permanent=False), started
                )
                return
            self._log(item, spool.Outcome.DELIVERED, result.reply, started)
            try:
                await self.db.awrite(spool.record_delivered, item, self.worker, result.reply)
            except StorageUnavailable as exc:
                # Delivered but not recorded: the lease runs out and it is sent again.
                # A duplicate is the lesser evil next to a lost message.
                log.error("delivery %s sent but not recorded: %s", item.id, exc)
                return
            metrics.DELIVERED.labels(item.direction.value).inc()

    async def _record_failure(
        self, item: spool.Claimed, exc: DeliveryError, started: float
    ) -> None:
        if exc.permanent:
            self._log(item, spool.Outcome.FAILED, exc.reply, started)
            failed = await self._record(spool.record_failed, item, exc.reply)
        else:
            self._log(item, spool.Outcome.DEFERRED, exc.reply, started)
            failed = await self._record(spool.record_deferred, item, exc.reply)
        if failed:  # refused for good, or given up after ``retry.give_up_after``
            metrics.BLOCKED.labels(item.direction.value, "failed").inc()

    def _log(self, item: spool.Claimed, outcome: spool.Outcome, reply: str, started: float) -> None:
        """The attempt's log line, count and time: the recipient by token only."""
        elapsed = time.perf_counter() - started
        metrics.DELIVERY_ATTEMPTS.labels(outcome.value).inc()
        metrics.STAGE_SECONDS.labels("delivery").observe(elapsed)
        event(
            log,
            "delivery attempt",
            event="delivery",
            trace=item.trace_id,
            delivery=item.id,
            message=item.message_id,
            to=item.recipient_token,
            attempt=item.attempts + 1,
            outcome=outcome.value,
            reply=redact(_first_line(reply), {item.recipient.lower(): item.recipient_token}),
            ms=round(elapsed * 1000, 1),
        )

    async def _record(self, fn: spool.RecordFn, item: spool.Claimed, reply: str) -> bool:
        try:
            return await self.db.awrite(
                fn, item.id, self.worker, reply, archive=self.archive, config=self.config
            )
        except StorageUnavailable as exc:
            log.error("delivery %s outcome not recorded: %s", item.id, exc)
            return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
