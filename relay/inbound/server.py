"""The SMTP server: envelope checks at RCPT, the pipeline at DATA, 250 after commit.

This is the only place where exceptions become SMTP replies.  A ``Refused``
gets the catalogue's reply for its refusal (``replies.reply_for``); storage
trouble is ``451 4.3.0`` so the sender keeps the message and retries; anything
unexpected is logged and also answered 451 — never aiosmtpd's default
``500 (ExceptionName) ...``, which would both leak internals and make the
sender give up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.core import metrics
from relay.core.logs import event
from relay.core.refusals import Refused
from relay.inbound import replies
from relay.inbound.dataread import DataProblem, read_data
from relay.inbound.envelope import check_recipient
from relay.inbound.limits import ConnectionGate, GuessingLimit
from relay.inbound.replies import SmtpReply, reply_for
from relay.pipeline.accept import Pipeline
from relay.storage.archive import ArchiveError
from relay.storage.db import Database, StorageUnavailable
from relay.storage.directory import Route

log = logging.getLogger("relay.inbound")

_PROBING = (replies.UNKNOWN_TOKEN, replies.SENDER_NOT_ALLOWED)
"""Refusals that a guesser gets: an unknown token, or a token that exists probed
with the wrong sender (SECURITY.md, "Timing and probing")."""


def _ip(peer: Any) -> str | None:
    """The client's IP address from a socket peer name (None for a socket without one)."""
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _envelope_sender(mail_from: str | None) -> str:
    if not mail_from or mail_from == "<>":
        return ""
    return mail_from


def new_trace_id() -> str:
    """The id of one SMTP transaction, which its messages keep (``relay.core.logs``)."""
    return secrets.token_hex(6)


@dataclass
class Transaction:
    """What the log line of one SMTP transaction (MAIL FROM to the end of DATA, or
    its abandonment) says.  Only tokens: never the real addresses."""

    trace: str
    client: str
    null_sender: bool
    started: float = field(default_factory=time.monotonic)
    routes: dict[str, Route] = field(default_factory=dict)
    """The route found at RCPT for each token recipient, reused at DATA."""
    recipients: list[str] = field(default_factory=list)
    """Accepted RCPTs: token (or bounce) addresses, nothing else is accepted."""
    refused: list[str] = field(default_factory=list)
    """Reply codes of the refused RCPTs (their addresses may be real ones)."""

    def log(
        self,
        ended: str,
        reply: SmtpReply | None = None,
        *,
        size: int | None = None,
        results: Sequence[str] = (),
    ) -> None:
        """``ended``: "data" (DATA was answered ``reply``), "reset" (RSET, HELO or
        EHLO before DATA) or "disconnected"."""
        event(
            log,
            "smtp transaction",
            event="smtp",
            trace=self.trace,
            client=self.client,
            sender="<>"
            if self.null_sender
            else sorted({r.sender_token for r in self.routes.values()}) or "-",
            to=self.recipients,
            refused=self.refused,
            size=size if size is not None else "-",
            ended=ended,
            reply=str(reply.code) if reply is not None else "-",
            result=results,
            ms=round((time.monotonic() - self.started) * 1000, 1),
        )


_HOOKS: dict[tuple[type, tuple[str, ...]], list[str]] = {}


def _hooks(cls: type, prefixes: tuple[str, ...]) -> list[str]:
    """The attribute names of ``cls`` that start with one of ``prefixes`` (cached)."""
    key = (cls, prefixes)
    if key not in _HOOKS:
        _HOOKS[key] = sorted(name for name in dir(cls) if name.startswith(prefixes))
    return _HOOKS[key]


class InboundHandler:
    """aiosmtpd handler; ``on_accepted`` is called after each commit (wakes the worker)."""

    def __dir__(self) -> list[str]:
        """Only the hooks aiosmtpd looks for at each new session (``RelaySMTP.__dir__``)."""
        return _hooks(type(self), ("handle_", "auth_"))

    def __init__(
        self, pipeline: Pipeline, db: Database, *, on_accepted: Callable[[], None] | None = None
    ) -> None:
        self.pipeline = pipeline
        self.db = db
        self.on_accepted = on_accepted
        limits = pipeline.config.limits
        self.max_recipients = limits.max_recipients
        self.guessing = GuessingLimit.from_limits(limits)
        """What refused RCPTs cost: guessing is slowed, valid recipients never."""
        self.held = 0
        """Refused RCPTs whose answer is being held back right now (``GuessingLimit``)."""
        self._in_data = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        """Whether a message is being processed (between DATA and its reply): its
        deliveries, if any, are not queued yet."""
        return self._in_data > 0

    async def drain(self, timeout: float) -> bool:
        """Wait until no DATA is being processed; False if ``timeout`` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """The transaction starts: it gets its trace id."""
        assert isinstance(server, RelaySMTP)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        server.transaction = Transaction(
            new_trace_id(), _ip(session.peer) or "?", not _envelope_sender(address)
        )
        return str(replies.SENDER_OK)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        assert isinstance(server, RelaySMTP) and server.transaction is not None  # MAIL came first
        txn = server.transaction
        reply = await self._rcpt(session, envelope, address, rcpt_options, txn)
        if reply == replies.RECIPIENT_OK:
            txn.recipients.append(address)
            return str(reply)
        if reply in _PROBING:
            reply = await self._refused(server, session, reply)
        txn.refused.append(str(reply.code))
        return str(reply)

    async def _refused(self, server: RelaySMTP, session: Session, reply: SmtpReply) -> SmtpReply:
        """A refused RCPT costs its session time, and too many of them the session
        (``GuessingLimit``); the valid RCPTs of the session are never held back."""
        server.refused_rcpts += 1
        ip = _ip(session.peer)
        penalty = self.guessing.refused(ip, server.refused_rcpts)
        if penalty.close:
            log.warning(
                "closing a session from %s after %d refused recipients "
                "(limits.unknown_recipients_hard_limit)",
                ip,
                server.refused_rcpts - 1,
            )
            server.close_after_reply()
            return replies.TOO_MANY_UNKNOWN
        if penalty.delay:
            log.info(
                "RCPT from %s refused, answered in %.1f s (refused recipient %d of the session)",
                ip,
                penalty.delay,
                server.refused_rcpts,
            )
            self.held += 1
            try:
                await asyncio.sleep(penalty.delay)
            finally:
                self.held -= 1
        return reply

    async def _rcpt(
        self,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
        txn: Transaction,
    ) -> SmtpReply:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        try:
            route = await self.db.run(
                check_recipient,
                _envelope_sender(envelope.mail_from),
                address,
                config=self.pipeline.config,
            )
        except Refused as exc:
            reply = reply_for(exc)
            log.info("RCPT refused: %s", reply)
            return reply
        except StorageUnavailable as exc:
            log.warning("RCPT: database unavailable: %s", exc)
            return replies.TEMP_FAILURE
        except Exception:
            log.exception("RCPT failed")
            return replies.TEMP_FAILURE
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if route is not None:
            txn.routes[address] = route
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._in_data += 1
        self._idle.clear()
        assert isinstance(server, RelaySMTP) and server.transaction is not None  # MAIL came first
        txn, server.transaction = server.transaction, None  # logged here, not as abandoned
        results: list[str] = []
        reply = replies.TEMP_FAILURE
        try:
            reply = await self._data(session, envelope, txn, results)
            if reply.code == replies.ACCEPTED.code:
                server.refused_rcpts = 0  # a session that delivers mail is no guesser
            return str(reply)
        finally:
            self._in_data -= 1
            if not self._in_data:
                self._idle.set()
            txn.log("data", reply, size=len(envelope.original_content or b""), results=results)

    async def _data(
        self, session: Session, envelope: Envelope, txn: Transaction, results: list[str]
    ) -> SmtpReply:
        trace = txn.trace
        raw = envelope.original_content or b""
        try:
            with metrics.timed("accept"):
                outcomes = await asyncio.to_thread(
                    self.pipeline.accept,
                    _envelope_sender(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    raw,
                    client_ip=_ip(session.peer),
                    helo=session.host_name or "",
                    known=txn.routes,
                    trace_id=trace,
                )
        except Refused as exc:
            reply = reply_for(exc)
            log.info("DATA refused: %s", reply, extra={"fields": {"trace": trace}})
            return reply
        except (StorageUnavailable, ArchiveError) as exc:
            log.warning("DATA: storage unavailable: %s", exc, extra={"fields": {"trace": trace}})
            return replies.TEMP_FAILURE
        except Exception:
            log.exception("DATA failed", extra={"fields": {"trace": trace}})
            return replies.TEMP_FAILURE
        if self.on_accepted is not None:
            self.on_accepted()
        results.extend(
            f"{o.message_id}:{o.status.value}" if o.message_id is not None else o.status.value
            for o in outcomes
        )
        ids = ",".join(str(o.message_id) for o in outcomes if o.message_id is not None)
        return replies.ACCEPTED.with_text(f"Message accepted{f' as {ids}' if ids else ''}")

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error", exc_info=error)
        return str(replies.TEMP_FAILURE)


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"<(({_ATEXT}(?:\.{_ATEXT})*)@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    rf"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>(?=[ \t]|$)"
)
"""``<local@domain>``: a dot-atom local part (RFC 5321 §4.1.2) and an ASCII host
name, followed by nothing or by a space and the parameters."""


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with our replies where it hard-codes its own texts."""

    _REWRITES: ClassVar[dict[str, SmtpReply]] = {
        "552 Error: message size exceeds fixed maximum message size": replies.TOO_BIG,
    }

    line_length_limit = 65536
    """aiosmtpd sizes its stream reader with this: a reader that holds 64 KiB lets
    ``read_data`` take a body in large pieces (and pauses the socket only past
    128 KiB).  The 1,000-byte line limit of DATA is ``relay.inbound.dataread.MAX_LINE``."""

    gate: ConnectionGate | None = None
    session_timeout: float | None = None
    transaction: Transaction | None = None
    """The transaction in progress, from MAIL FROM to the end of DATA."""
    refused_rcpts = 0
    """RCPTs of this session refused as unknown or from the wrong sender, since it
    last delivered a message (``GuessingLimit``)."""
    _counted = False
    _refused = False
    _hang_up = False
    _accepting = False
    """A message's data is being processed: its reply must reach the client."""
    _deadline: asyncio.TimerHandle | None = None

    def __dir__(self) -> list[str]:
        """Only the names aiosmtpd looks for (``smtp_*`` verbs, ``auth_*`` mechanisms).

        aiosmtpd finds the verbs and mechanisms of every new session by walking
        ``dir()`` of the protocol and of the handler with ``inspect.getmembers``:
        about 0.3 ms of each connection, for the same answer every time."""
        return _hooks(type(self), ("smtp_", "auth_"))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of MAIL FROM or RCPT TO, and what follows it.

        aiosmtpd reads it with the ``email`` package's RFC 5322 header parser
        (about 60 µs each).  The form nearly every client sends, ``<local@domain>``
        with a dot-atom local part and a plain domain, is read here by one regex
        and gives the same result; anything else (quoted local parts, source
        routes, address literals, a missing bracket) goes to aiosmtpd's parser.
        """
        plain = _PLAIN_PATH.match(arg)
        if plain is None or (self.local_part_limit and len(plain.group(2)) > self.local_part_limit):
            return super()._getaddr(arg)
        rest = arg[plain.end() :].lstrip(" \t")
        if rest.startswith("("):  # an RFC 5322 comment, which aiosmtpd's parser skips
            return super()._getaddr(arg)
        return plain.group(1), rest

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if status in self._REWRITES:
                status = str(self._REWRITES[status])
            metrics.smtp_reply(status)
        await super().push(status)
        if self._hang_up and self.transport is not None:
            self.transport.close()

    def close_after_reply(self) -> None:
        """Close the session once the reply to the current command is written."""
        self._hang_up = True

    def _abandon(self, why: str) -> None:
        """A transaction that ends without DATA still gets its log line."""
        txn, self.transaction = self.transaction, None
        if txn is not None:
            txn.log(why)

    def _set_rset_state(self) -> None:
        self._abandon("reset")
        super()._set_rset_state()  # type: ignore[no-untyped-call]

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, with the body read by ``relay.inbound.dataread`` in large pieces."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(str(replies.NEED_RCPT))
            return
        if arg:
            await self.push(str(replies.DATA_SYNTAX))
            return
        await self.push(str(replies.START_DATA))
        try:
            result = await read_data(self._reader, max_size=self.data_size_limit)
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if result.problem is not None:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            reply = (
                replies.TOO_BIG if result.problem is DataProblem.TOO_MUCH else replies.LINE_TOO_LONG
            )
            txn, self.transaction = self.transaction, None
            if txn is not None:
                txn.log("data", reply)
            await self.push(str(reply))
            return
        self.envelope.content = self.envelope.original_content = result.content
        self._accepting = True
        try:
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(status)
        finally:
            self._accepting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the session, or answer 421 and hang up (limits.max_connections,
        limits.connections_per_ip).  Called again after STARTTLS: counted once."""
        if self.gate is not None and not self._counted:
            ip = _ip(transport.get_extra_info("peername")) or "?"
            why = self.gate.admit(ip)
            if why is not None:
                log.warning("refused a session from %s: %s", ip, why)
                self._refused = True
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(f"{replies.TOO_MANY_CONNECTIONS}\r\n".encode())
                transport.close()
                return
            self._counted = True
        if self.session_timeout and self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(
                self.session_timeout, self._expire, transport
            )
        super().connection_made(transport)

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        """smtp.session_timeout: a session that drips bytes forever is hung up on.

        Not while a message it sent is being processed: closing then would lose
        the reply to a message that may be committed, and the sender would send
        it again.  That session is closed right after its reply instead."""
        if self._accepting:
            log.warning(
                "closing a session over smtp.session_timeout after its message's reply: %s",
                self.session and self.session.peer,
            )
            self.close_after_reply()
            return
        current = self.transport or transport  # the TLS transport after STARTTLS
        log.warning(
            "closing a session over smtp.session_timeout: %s", self.session and self.session.peer
        )
        if isinstance(current, asyncio.WriteTransport) and not current.is_closing():
            current.write(f"{replies.SESSION_TOO_LONG}\r\n".encode())
        current.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._abandon("disconnected")
        if self._deadline is not None:
            self._deadline.cancel()
        if self._counted and self.gate is not None:
            self._counted = False
            self.gate.release()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        result: bool | None = super().eof_received()
        return result


def smtp_factory(
    handler: InboundHandler,
    *,
    hostname: str,
    max_size: int,
    data_timeout: float,
    tls_context: ssl.SSLContext | None = None,
    require_tls: bool = False,
    gate: ConnectionGate | None = None,
    session_timeout: float | None = None,
) -> Callable[[], RelaySMTP]:
    """A protocol factory for ``loop.create_server``.

    ``hostname`` is passed so aiosmtpd does not call the blocking
    ``socket.getfqdn()`` for every connection.
    """

    def factory() -> RelaySMTP:
        protocol = RelaySMTP(
            handler,
            hostname=hostname,
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="Marketplace relay",
            timeout=data_timeout,
            tls_context=tls_context,
            require_starttls=require_tls and tls_context is not None,
        )
        protocol.gate = gate
        protocol.session_timeout = session_timeout
        return protocol

    return factory
