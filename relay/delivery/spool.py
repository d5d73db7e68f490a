"""The durable outbound queue: a table of deliveries, claimed with a lease.

A worker claims due deliveries by setting a lease (``claimed_by``,
``claimed_until``) on rows that are pending and unclaimed or whose lease ran
out: on PostgreSQL the rows are selected ``FOR UPDATE SKIP LOCKED``, on SQLite
each is leased by a conditional UPDATE.  So several workers and several relay
processes or hosts sharing one database never deliver the same row at the same
time.  A live worker renews the leases of what it is still sending; a worker
that dies leaves them to expire, and a restarted relay on the same host
releases the leases of its own dead processes at once.

Outcome classification follows RFC 5321 §4.2.1 (and Mailman's ``deliver``): a
5xx reply is permanent, except 552, which §4.5.3.1.10 tells clients to treat as
temporary for historical reasons; 4xx replies and connection trouble are
retried with exponential backoff until ``give_up_after``.

A message that failed for good is told to its sender (``notices``), and to the
listener registered for its direction (``listeners``: a campaign's send), in
the transaction that records it.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    Table,
    Update,
    bindparam,
    insert,
    or_,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.sql.dml import ReturningUpdate
from sqlmodel import Session, col, func, select

from relay.core.config import RelayConfig, RetryConfig
from relay.core.tokens import new_token, token_address
from relay.delivery.listeners import listener_for
from relay.delivery.notices import create_notice, party_map, sanitize
from relay.storage.archive import Archive
from relay.storage.db import inserted_id
from relay.storage.events import EventType, message_event, message_event_of
from relay.storage.models import (
    Conversation,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Direction,
    Message,
    MessageStatus,
    utcnow,
)


class Outcome(enum.StrEnum):
    """What became of an attempt, or what a DSN said: the words
    ``delivery_attempt.outcome`` records and the log lines and metrics use."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    GAVE_UP = "gave_up"
    """Deferred until ``retry.give_up_after`` ran out."""
    DSN_DELAYED = "dsn_delayed"
    DSN_FAILED = "dsn_failed"


CONVERSATION = frozenset({Direction.BUYER_TO_SELLER, Direction.SELLER_TO_BUYER})
"""Messages between a buyer and a seller: their fate is a webhook event
(``message.delivered``, ``delivery.failed``); a campaign's is in its report."""

NO_SENDER = frozenset({Direction.CAMPAIGN, Direction.NOTICE})
"""Messages whose failure nobody is told of: a notice is not answered with
another, and campaign mail has no sender to tell (its report counts it)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    message_id: int
    envelope_from: str
    recipient: str
    path: str
    attempts: int
    direction: Direction
    trace_id: str = "-"
    recipient_token: str = "-"
    """The recipient's token address: what the logs say instead of ``recipient``."""
    conversation_id: int | None = None
    """The message's conversation (a notice has that of the message it is
    about; campaign mail has none)."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_token()[:6]}"


_DELIVERIES = cast(Table, Delivery.__table__)  # type: ignore[attr-defined]
_MESSAGES = cast(Table, Message.__table__)  # type: ignore[attr-defined]
_CONVERSATIONS = cast(Table, Conversation.__table__)  # type: ignore[attr-defined]
_D, _M, _C = _DELIVERIES.c, _MESSAGES.c, _CONVERSATIONS.c
_NEW_DELIVERY = insert(_DELIVERIES)
_NEW_ATTEMPT = insert(cast(Table, DeliveryAttempt.__table__))  # type: ignore[attr-defined]
"""The queue's statements are built once, here: a message's delivery costs
executes with parameters, not statement construction and cache keys.  The
parameters' names are never a column's: an UPDATE would SET a column that a
parameter is named after."""


def enqueue(session: Session, message_id: int, *, recipient: str, domain: str) -> int:
    """A delivery of message ``message_id`` to ``recipient`` with its own VERP
    return path; returns the delivery's id."""
    verp = new_token()
    now = utcnow()
    return inserted_id(
        session.connection(),
        _NEW_DELIVERY,
        {
            "message_id": message_id,
            "envelope_from": f"bounce+{verp}@{domain}",
            "verp": verp,
            "recipient": recipient,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "last_reply": "",
            "claimed_by": None,
            "claimed_until": None,
            "created_at": now,
            "finished_at": None,
        },
    )


class Lease:
    """The statements that lease a table's due rows to a worker, built once.

    ``due`` selects the ids of the candidates, in the order they are to be taken,
    with their limit; its conditions include ``claimable``, what a row must
    still be when it is leased.  Both may use bound parameters (``bindparam``),
    given to ``take``.

    One statement leases a batch: ``UPDATE … SET claimed_by, claimed_until WHERE
    id IN (due) RETURNING id``.  On PostgreSQL the candidates are selected
    ``FOR UPDATE SKIP LOCKED``: rows that another transaction is claiming are
    passed over instead of waited for, a row changed since the statement began
    is checked against ``due``'s conditions again as it is locked, and the
    lease is set before this transaction commits and lets go of the row locks.
    SQLite has no row locks and needs none: the statement runs under the
    database's write lock, and its subquery is evaluated once, before any row
    is updated, so a row another worker leased is not claimable when it runs.
    The UPDATE itself finds the rows by their ids only: with ``claimable``
    repeated there, SQLite walks every due row of the queue's index instead.
    SQLite before 3.35 has no RETURNING; there each candidate is leased by a
    conditional UPDATE of its own, which only succeeds if the row is still
    ``claimable``, so a row another worker claimed in between is skipped.
    """

    def __init__(
        self, table: Table, due: Select[Any], claimable: Sequence[ColumnElement[bool]]
    ) -> None:
        self.table = table
        self.due = due
        self.claimable = tuple(claimable)
        self._batch: dict[str, ReturningUpdate[int]] = {}
        self._each: Update | None = None

    def take(
        self, session: Session, params: dict[str, Any], *, worker: str, until: datetime
    ) -> list[int]:
        """Lease the rows ``due`` selects with ``params`` to ``worker`` until
        ``until``; returns the ids leased."""
        conn = session.connection()
        values = {**params, "lease_worker": worker, "lease_until": until}
        if conn.dialect.update_returning:
            leased = conn.execute(self._batch_statement(conn), values).scalars().all()
            return [int(i) for i in leased]
        ids: list[int] = []
        for row_id in conn.execute(self.due, params).scalars().all():
            result = conn.execute(self._each_statement(), {**values, "lease_id": row_id})
            if result.rowcount == 1:
                ids.append(int(row_id))
        return ids

    def _batch_statement(self, conn: Connection) -> ReturningUpdate[int]:
        dialect = conn.dialect
        # PostgreSQL before 12 knows no MATERIALIZED: its CTEs always are.
        variant = (
            ""
            if dialect.name != "postgresql"
            else "MATERIALIZED"
            if (dialect.server_version_info or (0,)) >= (12,)
            else "CTE"
        )
        built = self._batch.get(variant)
        if built is None:
            key = self.table.c.id
            due: Select[Any] = self.due
            if variant:
                # The candidates are locked in a materialized CTE: PostgreSQL may
                # run a plain IN subquery again for each row it updates, and each
                # run would pass over the rows updated so far and take the next.
                locked = self.due.with_for_update(skip_locked=True, of=self.table).cte("due")
                if variant == "MATERIALIZED":
                    locked = locked.prefix_with("MATERIALIZED")
                due = core_select(next(iter(locked.c)))
            built = self._batch[variant] = (
                update(self.table)
                .where(key.in_(due))
                .values(
                    claimed_by=bindparam("lease_worker"), claimed_until=bindparam("lease_until")
                )
                .returning(key)
            )
        return built

    def _each_statement(self) -> Update:
        if self._each is None:
            self._each = (
                update(self.table)
                .where(self.table.c.id == bindparam("lease_id"), *self.claimable)
                .values(
                    claimed_by=bindparam("lease_worker"), claimed_until=bindparam("lease_until")
                )
            )
        return self._each


_NOW = bindparam("now", type_=_D.next_attempt_at.type)
_CLAIMABLE = (
    _D.status == DeliveryStatus.PENDING,
    _D.next_attempt_at <= _NOW,
    or_(_D.claimed_until.is_(None), _D.claimed_until < _NOW),
)
_DELIVERY_LEASE = Lease(
    _DELIVERIES,
    core_select(_D.id)
    .where(*_CLAIMABLE)
    .order_by(_D.next_attempt_at)
    .limit(bindparam("limit", type_=Integer)),
    _CLAIMABLE,
)


def claim(
    session: Session,
    worker: str,
    *,
    limit: int,
    lease: float,
    now: datetime | None = None,
    domain: str = "",
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries to ``worker`` until ``now + lease``
    (``Lease``: one statement), then read what sending them takes (one more)."""
    now = now or utcnow()
    until = now + timedelta(seconds=lease)
    ids = _DELIVERY_LEASE.take(session, {"now": now, "limit": limit}, worker=worker, until=until)
    return _claimed(session, ids, worker, domain) if ids else []


class Leasable(Protocol):
    """A table whose rows are claimed with a lease (deliveries, campaign sends)."""

    id: int | None
    claimed_by: str | None
    claimed_until: datetime | None


def lease_rows(
    session: Session,
    model: type[Leasable],
    due: Select[Any],
    claimable: Sequence[ColumnElement[bool]],
    *,
    worker: str,
    until: datetime,
) -> list[int]:
    """Lease the rows ``due`` selects (ids) that are still ``claimable`` to
    ``worker`` until ``until``; returns the ids leased (see ``Lease``)."""
    table = cast(Table, getattr(model, "__table__"))  # noqa: B009
    return Lease(table, due, claimable).take(session, {}, worker=worker, until=until)


_ABOUT = _MESSAGES.alias("about")
_CLAIMED = (
    core_select(
        _D.id,
        _D.message_id,
        _D.envelope_from,
        _D.recipient,
        _D.attempts,
        _M.delivered_path,
        _M.trace_id,
        _M.direction,
        _M.conversation_id,
        _ABOUT.c.direction,
        _C.buyer_token,
        _C.seller_token,
    )
    .select_from(
        _DELIVERIES.outerjoin(_MESSAGES, _M.id == _D.message_id)
        .outerjoin(_ABOUT, _ABOUT.c.id == _M.about_message_id)
        .outerjoin(_CONVERSATIONS, _C.id == _M.conversation_id)
    )
    .where(_D.id.in_(bindparam("ids", expanding=True)))
    .order_by(_D.next_attempt_at)
)


def _claimed(session: Session, ids: list[int], worker: str, domain: str) -> list[Claimed]:
    """What the worker needs of the leased deliveries, in one joined query.  A
    delivery whose message has no delivered copy cannot be sent: it fails."""
    conn = session.connection()
    claimed: list[Claimed] = []
    for row in conn.execute(_CLAIMED, {"ids": ids}).all():
        (d_id, message_id, envelope_from, recipient, attempts, path, trace, direction) = row[:8]
        conversation_id, about_direction, buyer_token, seller_token = row[8:]
        if not path:
            _finish(
                conn,
                d_id,
                worker,
                DeliveryStatus.FAILED,
                Outcome.FAILED,
                "no delivered copy archived",
                utcnow(),
            )
            continue
        # A notice goes back to the sender of the message it is about.
        to_seller = (
            about_direction is Direction.SELLER_TO_BUYER
            if direction is Direction.NOTICE
            else direction is Direction.BUYER_TO_SELLER
        )
        token = seller_token if to_seller else buyer_token
        claimed.append(
            Claimed(
                d_id,
                message_id,
                envelope_from,
                recipient,
                path,
                attempts,
                direction,
                trace_id=trace or "-",
                recipient_token=(token_address(token, domain) if domain else token)
                if token and (direction is not Direction.NOTICE or about_direction)
                else "-",
                conversation_id=conversation_id,
            )
        )
    return claimed


def renew_claims(
    session: Session, worker: str, ids: list[int], *, lease: float, now: datetime | None = None
) -> int:
    """Extend ``worker``'s leases on the deliveries it is still sending.

    A delivery may take longer than one lease (a slow smarthost, a big message):
    without this, the lease would run out mid-send and the row would be claimed
    and sent again.  A worker that dies stops renewing, and its leases expire."""
    if not ids:
        return 0
    now = now or utcnow()
    result: Any = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id).in_(ids),
            col(Delivery.claimed_by) == worker,
            col(Delivery.status) == DeliveryStatus.PENDING,
        )
        .values(claimed_until=now + timedelta(seconds=lease))
    )
    return int(result.rowcount)


def release_dead_claims(session: Session) -> int:
    """Release leases on deliveries held by processes of this host that no longer exist."""
    return release_dead_leases(session, Delivery, col(Delivery.status) == DeliveryStatus.PENDING)


def release_dead_leases(
    session: Session, model: type[Leasable], pending: ColumnElement[bool]
) -> int:
    """Release the leases on ``model``'s ``pending`` rows that processes of this
    host held and that no longer exist (a relay restarted after a SIGKILL takes
    its work back at once instead of waiting for the leases to run out)."""
    host = socket.gethostname()
    released = 0
    rows = session.exec(select(model).where(pending, col(model.claimed_by).is_not(None))).all()
    for row in rows:
        owner_host, _, rest = (row.claimed_by or "").partition(":")
        pid = rest.partition(":")[0]
        if owner_host == host and pid.isdigit() and not _alive(int(pid)):
            row.claimed_by = None
            row.claimed_until = None
            session.add(row)
            released += 1
    return released


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a previous life of this process id: our own claims are all new
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OWNED = core_select(_D.message_id, _D.attempts, _D.created_at).where(
    _D.id == bindparam("delivery_id"),
    _D.status == DeliveryStatus.PENDING,
    _D.claimed_by == bindparam("worker"),
)
"""A delivery that is still ``worker``'s to record (pending, leased to it)."""
_FINISH = (
    update(_DELIVERIES)
    .where(
        _D.id == bindparam("delivery_id"),
        _D.status == DeliveryStatus.PENDING,
        _D.claimed_by == bindparam("worker"),
    )
    .values(
        status=bindparam("new_status"),
        attempts=_D.attempts + 1,
        last_reply=bindparam("reply"),
        finished_at=bindparam("now"),
        claimed_by=None,
        claimed_until=None,
    )
)
_DEFER = (
    update(_DELIVERIES)
    .where(
        _D.id == bindparam("delivery_id"),
        _D.status == DeliveryStatus.PENDING,
        _D.claimed_by == bindparam("worker"),
    )
    .values(
        attempts=_D.attempts + 1,
        last_reply=bindparam("reply"),
        next_attempt_at=bindparam("next_at"),
        claimed_by=None,
        claimed_until=None,
    )
)
_MESSAGE_DELIVERED = (
    update(_MESSAGES)
    .where(_M.id == bindparam("message_id"), _M.status == MessageStatus.QUEUED)
    .values(status=MessageStatus.DELIVERED, updated_at=bindparam("now"))
)


def _finish(
    conn: Connection,
    delivery_id: int,
    worker: str,
    status: DeliveryStatus,
    outcome: Outcome,
    reply: str,
    now: datetime,
) -> bool:
    """End ``worker``'s delivery with ``status`` and record the attempt; False
    (and nothing written) when the delivery is no longer ``worker``'s."""
    result = conn.execute(
        _FINISH,
        {
            "delivery_id": delivery_id,
            "worker": worker,
            "new_status": status,
            "reply": reply,
            "now": now,
        },
    )
    if result.rowcount != 1:
        return False
    _attempt(conn, delivery_id, outcome, reply, now)
    return True


def _attempt(
    conn: Connection, delivery_id: int, outcome: Outcome, reply: str, now: datetime
) -> None:
    conn.execute(
        _NEW_ATTEMPT,
        {"delivery_id": delivery_id, "at": now, "outcome": outcome.value, "reply": reply},
    )


def record_delivered(session: Session, item: Claimed, worker: str, reply: str) -> None:
    """The recipient's server took ``item``: the delivery is done and its
    message delivered (if it was still queued), with the campaign's listener
    told and the ``message.delivered`` event written.  Nothing is read: the
    claimed item knows its message, and the conditional UPDATEs say what was
    still to be done."""
    conn = session.connection()
    now = utcnow()
    if not _finish(conn, item.id, worker, DeliveryStatus.DELIVERED, Outcome.DELIVERED, reply, now):
        return
    result = conn.execute(_MESSAGE_DELIVERED, {"message_id": item.message_id, "now": now})
    if result.rowcount != 1:
        return
    listener = listener_for(item.direction)
    if listener is not None:
        listener.delivered(session, item.message_id)
    if item.direction in CONVERSATION:
        message_event_of(
            session,
            EventType.MESSAGE_DELIVERED,
            message_id=item.message_id,
            direction=item.direction,
            conversation_id=item.conversation_id,
            delivery_id=item.id,
        )


def backoff(retry: RetryConfig, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    return float(min(retry.max_delay, retry.initial_delay * (2 ** max(0, attempts - 1))))


def record_deferred(
    session: Session,
    delivery_id: int,
    worker: str,
    reply: str,
    *,
    archive: Archive,
    config: RelayConfig,
) -> bool:
    """Schedule the next attempt, or give up: True when the message failed."""
    conn = session.connection()
    owned = conn.execute(_OWNED, {"delivery_id": delivery_id, "worker": worker}).first()
    if owned is None:
        return False
    message_id, attempts, created_at = owned
    now = utcnow()
    if (now - created_at).total_seconds() >= config.delivery.retry.give_up_after:
        return _fail(
            session,
            delivery_id,
            message_id,
            worker,
            Outcome.GAVE_UP,
            f"gave up after {attempts + 1} attempts: {reply}",
            archive=archive,
            config=config,
        )
    next_at = now + timedelta(seconds=backoff(config.delivery.retry, attempts + 1))
    result = conn.execute(
        _DEFER,
        {"delivery_id": delivery_id, "worker": worker, "reply": reply, "next_at": next_at},
    )
    if result.rowcount == 1:
        _attempt(conn, delivery_id, Outcome.DEFERRED, reply, now)
    return False


def record_failed(
    session: Session,
    delivery_id: int,
    worker: str,
    reply: str,
    *,
    archive: Archive,
    config: RelayConfig,
) -> bool:
    """The delivery failed for good: True when it was still this worker's to record."""
    conn = session.connection()
    owned = conn.execute(_OWNED, {"delivery_id": delivery_id, "worker": worker}).first()
    if owned is None:
        return False
    return _fail(
        session,
        delivery_id,
        owned[0],
        worker,
        Outcome.FAILED,
        reply,
        archive=archive,
        config=config,
    )


def _fail(
    session: Session,
    delivery_id: int,
    message_id: int,
    worker: str,
    outcome: Outcome,
    reply: str,
    *,
    archive: Archive,
    config: RelayConfig,
) -> bool:
    """End the delivery as failed and tell whom it concerns; False when it was
    no longer ``worker``'s."""
    conn = session.connection()
    if not _finish(conn, delivery_id, worker, DeliveryStatus.FAILED, outcome, reply, utcnow()):
        return False
    msg = session.get(Message, message_id)
    if msg is None:
        return True
    _notify_failure(
        session, msg, reply, archive=archive, config=config, what="could not be delivered"
    )
    return True


def _notify_failure(
    session: Session,
    msg: Message,
    reply: str,
    *,
    archive: Archive,
    config: RelayConfig,
    what: str,
) -> None:
    msg.status = MessageStatus.FAILED
    msg.status_reason = reply[:500]
    msg.updated_at = utcnow()
    session.add(msg)
    listener = listener_for(msg.direction)
    if listener is not None:
        assert msg.id is not None
        listener.failed(session, msg.id)
    if msg.direction in CONVERSATION:
        message_event(session, EventType.DELIVERY_FAILED, msg, reply=reply[:500])
    if msg.direction in NO_SENDER:
        return
    domain = config.marketplace.domain
    why = "The recipient's mail server reported: " + sanitize(
        reply, party_map(session, msg, domain), domain
    )
    create_notice(session, archive, config, about=msg, what=what, why=why)


def record_dsn(
    session: Session,
    verp: str,
    *,
    permanent: bool,
    status: str,
    diagnostic: str,
    archive: Archive,
    config: RelayConfig,
) -> bool:
    """A delivery status notification came back to ``bounce+verp@``.

    A permanent failure marks the delivery bounced and notifies the sender, once;
    a delay is recorded.  Returns False if no delivery has that VERP token.
    """
    d = session.exec(select(Delivery).where(Delivery.verp == verp)).first()
    if d is None or d.id is None:
        return False
    now = utcnow()
    text = f"{status} {diagnostic}".strip()
    if not permanent:
        session.add(
            DeliveryAttempt(delivery_id=d.id, at=now, outcome=Outcome.DSN_DELAYED.value, reply=text)
        )
        return True
    result: Any = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == d.id,
            col(Delivery.status).in_([DeliveryStatus.PENDING, DeliveryStatus.DELIVERED]),
        )
        .values(
            status=DeliveryStatus.BOUNCED,
            finished_at=now,
            last_reply=text,
            claimed_by=None,
            claimed_until=None,
        )
    )
    session.add(
        DeliveryAttempt(delivery_id=d.id, at=now, outcome=Outcome.DSN_FAILED.value, reply=text)
    )
    if result.rowcount == 1:
        msg = session.get(Message, d.message_id)
        if msg is not None:
            _notify_failure(
                session,
                msg,
                text,
                archive=archive,
                config=config,
                what="was returned by the recipient's mail server",
            )
    return True


def verp_exists(session: Session, verp: str) -> bool:
    return session.exec(select(Delivery.id).where(Delivery.verp == verp)).first() is not None


def retry_now(session: Session, delivery_id: int) -> Delivery | None:
    """Make a delivery due now; a failed one is put back in the queue (admin's call)."""
    d = session.get(Delivery, delivery_id)
    if d is None:
        return None
    if d.status is DeliveryStatus.DELIVERED:
        return d
    if d.status in (DeliveryStatus.FAILED, DeliveryStatus.BOUNCED):
        d.status = DeliveryStatus.PENDING
        d.finished_at = None
        d.created_at = utcnow()  # the retry window starts again
        msg = session.get(Message, d.message_id)
        if msg is not None:
            msg.status = MessageStatus.QUEUED
            session.add(msg)
    now = utcnow()
    d.next_attempt_at = now
    if d.claimed_until is None or d.claimed_until < now:
        # A live claim means a worker is sending it right now: leave it that
        # worker's, or the message could go out twice.
        d.claimed_by = None
        d.claimed_until = None
    session.add(d)
    session.flush()
    return d


def list_queue(session: Session, *, include_done: bool = False, limit: int = 200) -> list[Delivery]:
    query = select(Delivery).order_by(col(Delivery.id)).limit(limit)
    if not include_done:
        query = query.where(Delivery.status == DeliveryStatus.PENDING)
    return list(session.exec(query).all())


def pending_summary(session: Session) -> tuple[int, datetime | None]:
    """How many deliveries wait, and since when the oldest has (metrics, status)."""
    row = session.exec(
        select(func.count(), func.min(Delivery.created_at)).where(
            Delivery.status == DeliveryStatus.PENDING
        )
    ).one()
    return int(row[0]), row[1]


class RecordFn(Protocol):
    """The shape of ``record_deferred`` and ``record_failed``: True when the
    message is now failed."""

    def __call__(
        self,
        session: Session,
        delivery_id: int,
        worker: str,
        reply: str,
        *,
        archive: Archive,
        config: RelayConfig,
    ) -> bool: ...
