"""Archive retention: messages older than ``archive.retention_days`` are purged,
with their stored copies, by ``relay archive purge`` and by the running relay
once a day.

What is purged
    A message whose ``created_at`` is before ``now() - retention_days`` (the
    relay's clock, ``relay.core.clock``) and that is finished: delivered, rejected,
    blocked or failed, notices included (they are messages of direction
    ``notice``).  With it go its rule hits, its deliveries and their attempts,
    and the copies it alone refers to.

What is never purged
    - quarantined messages: they wait for an admin's decision, however old;
    - messages that are not finished: status ``queued``, or any delivery still
      pending (a retry window can be longer than the retention);
    - a message that a notice which is itself kept (recent, or undelivered)
      reports on.  Notices are purged *together with* the message they report
      on, in the same transaction, so ``about_message_id`` never points at a
      purged row; a notice can go on its own (its message stays), which
      leaves nothing dangling either.

The threading map
    ``message_id_map`` rows older than the cutoff are purged too: they hold the
    senders' original Message-IDs, metadata of mail the archive no longer keeps.
    A reply to such old mail is still relayed; it just no longer threads with
    it in the recipient's mail client.

Stored copies
    ``received_path`` and ``delivered_path`` are paths relative to the archive
    root.  One received copy is shared by the rows of every recipient of one
    inbound mail, so a file is removed only when no remaining row refers to it.
    The row deletions are committed first and the files removed afterwards:
    a crash in between leaves an orphan file, never a row whose copy is gone.
    A file already missing is not an error.  Date directories (``YYYY/MM/DD``)
    left empty are removed when they are older than the cutoff, so never the
    directory the relay is writing today's copies into.

Batches and concurrency
    Candidates are read in batches of ``BATCH_SIZE`` (outside any lock), and
    each batch is deleted by one job of the database's group-commit writer, in
    which every condition is checked again: the write lock is held for one
    batch at a time, and a huge backlog never becomes one giant transaction.
    Several purges at once (``relay serve --workers N``, several hosts, the
    command while the relay runs) are safe: on SQLite the writer's
    transactions are exclusive; on PostgreSQL the job locks the rows it deletes
    ``FOR UPDATE SKIP LOCKED`` first, so a row another purge (or a hot-path
    write) holds is left for the next run, never waited for or counted twice
    (the purge never waits for a lock, so it cannot deadlock with the hot
    path).  Once a message is locked, nothing can add a notice, delivery or
    attempt to it: such a write waits, then fails on the foreign key (in
    practice a DSN about mail purged at that very moment, answered 451: when it
    is retried its delivery is gone and it is ignored).  A removed file is
    counted by the purge whose ``unlink`` removed it.

Performance note: deleting a message makes both databases look for the rows
that refer to it, so ``message.about_message_id`` (a foreign key to
``message``) is indexed (``ix_message_about_message_id``): without the index each
deleted row costs a scan of the message table inside the write lock (5 s per
batch of 500 on SQLite with 200,000 rows, against 13 ms with it).  Finding the
rows that still share a stored copy scans the table too, but after the commit,
outside the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, update
from sqlmodel import Session, col, func, select

from relay.campaigns.models import CampaignSend
from relay.core import clock, metrics
from relay.core.config import ArchiveConfig
from relay.storage.archive import Archive, iso
from relay.storage.db import Database, StorageUnavailable
from relay.storage.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Message,
    MessageIdMap,
    MessageStatus,
    RuleHit,
)

log = logging.getLogger("relay.retention")

BATCH_SIZE = 500
"""Messages per write job: some 15 ms of the write lock each when
``message.about_message_id`` is indexed (see the performance note above)."""

FIRST_DELAY = 60.0
"""Seconds after the relay starts before its first purge (plus up to as much
again at random, so that the workers of ``--workers N`` do not all start
together).  Not at once: a relay that is restarted in a loop must not purge in
a loop, and start-up stays fast."""

INTERVAL = 24 * 3600.0
"""Seconds between the end of one purge of the running relay and the next."""

NOT_FINISHED = (MessageStatus.QUEUED, MessageStatus.QUARANTINED)
"""Statuses that are never purged: waiting for delivery, or for an admin."""


# --- what one run did ------------------------------------------------------------


@dataclass(slots=True)
class PurgeReport:
    """What one purge did (or, with ``dry_run``, would do)."""

    retention_days: int
    cutoff: datetime
    dry_run: bool = False
    messages: int = 0
    """Message rows purged (notices included)."""
    copies: int = 0
    """Stored copies removed from the archive."""
    thread_ids: int = 0
    """``message_id_map`` rows purged."""
    kept_quarantined: int = 0
    """Older than the cutoff, kept because they are quarantined."""
    kept_undelivered: int = 0
    """Older than the cutoff, kept because they are queued or a delivery is pending."""
    kept_other: int = 0
    """Older than the cutoff, kept because a notice about them is kept, or because
    another transaction held them at the time (purged by a later run)."""
    copies_not_removed: int = 0
    """Files that could not be removed (permissions, say): orphans, logged."""
    stopped: bool = False
    """The run was cut short because the relay is stopping."""

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "retention_days": self.retention_days,
            "cutoff": iso(self.cutoff),
            "purged_messages": self.messages,
            "removed_copies": self.copies,
            "purged_message_id_mappings": self.thread_ids,
            "kept_quarantined": self.kept_quarantined,
            "kept_undelivered": self.kept_undelivered,
            "kept_other": self.kept_other,
            "copies_not_removed": self.copies_not_removed,
        }

    def describe(self) -> str:
        """One line, for the command's output and the relay's log."""
        when = f"older than {self.retention_days} days ({self.cutoff:%Y-%m-%d %H:%M} UTC)"
        copies = _plural(self.copies, "stored copy", "stored copies")
        ids = _plural(self.thread_ids, "Message-ID mapping", "Message-ID mappings")
        if self.dry_run:
            done = (
                f"would purge {_plural(self.messages, 'message')} {when}"
                f" and remove {copies} and {ids}"
            )
        else:
            done = f"purged {_plural(self.messages, 'message')} {when}, removed {copies} and {ids}"
        kept = f"{self.kept_quarantined} quarantined and {self.kept_undelivered} undelivered"
        if self.kept_other:
            kept += f" ({self.kept_other} more kept for their notices or in use)"
        line = f"{done}; {'keeping' if self.dry_run else 'kept'} {kept}"
        if self.copies_not_removed:
            line += f"; {_plural(self.copies_not_removed, 'stored copy', 'stored copies')}"
            line += " could not be removed"
        if self.stopped:
            line += " (stopped early: the relay is shutting down)"
        return line


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def cutoff_for(retention_days: int, now: datetime | None = None) -> datetime:
    """``now - retention_days``; a retention longer than the calendar keeps everything."""
    now = now or clock.now()
    try:
        return now - timedelta(days=retention_days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


# --- the purge -----------------------------------------------------------------


def purge(
    db: Database,
    archive: Archive,
    retention_days: int,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
    now: datetime | None = None,
) -> PurgeReport:
    """Purge what is older than ``retention_days`` (see the module docstring).

    Synchronous and blocking: the running relay calls it in a thread.  Reads go
    through ``db.call``, deletions through ``db.write`` (one job per batch),
    files are removed after each batch's commit.  ``should_stop`` is asked
    between batches; a run cut short has committed what it reports.
    """
    report = PurgeReport(retention_days, cutoff_for(retention_days, now), dry_run=dry_run)
    stop = should_stop or (lambda: False)
    after = 0
    counted_ahead: set[int] = set()
    """Dry run: notices counted with the message they report on, whose own id is
    further on (they are not deleted, so they would come up again)."""
    while not stop():
        batch = db.call(_candidates, report.cutoff, after, batch_size)
        if not batch:
            break
        after = batch[-1]
        batch = [i for i in batch if i not in counted_ahead]
        counted_ahead = {i for i in counted_ahead if i > after}
        if not batch:
            continue
        if dry_run:
            doomed, copies = db.call(_dry_batch, batch, report.cutoff)
            counted_ahead |= {i for i in doomed if i > after}
            report.messages += len(doomed)
            report.copies += copies
            continue
        done = db.write(_delete_batch, batch, report.cutoff)
        report.messages += done.messages
        if done.paths:
            removed, failed = _remove_copies(db, archive, done.paths, report.cutoff)
            report.copies += removed
            report.copies_not_removed += failed
    report.stopped = stop()
    if not report.stopped:
        report.thread_ids = _purge_thread_ids(db, report.cutoff, batch_size, dry_run, stop)
        report.stopped = stop()
    kept = db.call(_kept, report.cutoff)
    report.kept_quarantined, report.kept_undelivered, old_left = kept
    if dry_run:
        old_left -= report.messages
    report.kept_other = max(0, old_left - report.kept_quarantined - report.kept_undelivered)
    return report


def _has_pending_delivery() -> ColumnElement[bool]:
    """The message (of the enclosing query) still has a delivery to make."""
    return (
        select(Delivery.id)
        .where(
            col(Delivery.message_id) == col(Message.id),
            col(Delivery.status) == DeliveryStatus.PENDING,
        )
        .exists()
    )


def _finished_before(cutoff: datetime) -> ColumnElement[bool]:
    """The row's own conditions: old enough, in a final status, no pending delivery."""
    pending = _has_pending_delivery()
    return and_(
        col(Message.created_at) < cutoff,
        col(Message.status).not_in(NOT_FINISHED),
        ~pending,
    )


def _candidates(session: Session, cutoff: datetime, after: int, limit: int) -> list[int]:
    """The next ``limit`` ids after ``after`` whose own conditions hold (a read:
    the write job checks again, with the notices)."""
    query = (
        select(Message.id)
        .where(col(Message.id) > after, _finished_before(cutoff))
        .order_by(col(Message.id))
        .limit(limit)
    )
    return [i for i in session.exec(query).all() if i is not None]


def _doomed(session: Session, batch: Sequence[int], cutoff: datetime, *, lock: bool) -> set[int]:
    """Which rows of ``batch`` can go now (finished, and every notice about them
    can go too), with the notices about them.

    With ``lock`` (PostgreSQL; SQLite ignores it, its writer is exclusive) the
    batch's rows and the notices about them, then their deliveries, are locked
    ``FOR UPDATE SKIP LOCKED`` before anything is decided: a row held by another
    transaction is left alone (with the message it is a notice or delivery of),
    and once a message is locked no notice, delivery or attempt can be added to
    it until this transaction ends.  Every condition is then read afresh.
    """
    rows = select(Message.id).where(
        or_(col(Message.id).in_(batch), col(Message.about_message_id).in_(batch))
    )
    if lock:
        rows = rows.with_for_update(skip_locked=True)
    held = {i for i in session.exec(rows).all() if i is not None}
    # Read after the lock, so that every notice about a held message is seen.
    notices = [
        (nid, about)
        for nid, about in session.exec(
            select(Message.id, Message.about_message_id).where(
                col(Message.about_message_id).in_(batch)
            )
        ).all()
        if nid is not None and about is not None
    ]
    busy: set[int] = set()
    if lock and held:
        deliveries = session.exec(
            select(Delivery.id, Delivery.message_id).where(col(Delivery.message_id).in_(held))
        ).all()
        if deliveries:
            got = set(
                session.exec(
                    select(Delivery.id)
                    .where(col(Delivery.id).in_([d for d, _ in deliveries]))
                    .with_for_update(skip_locked=True)
                ).all()
            )
            busy = {m for d, m in deliveries if d not in got}
    finished = (
        set(
            session.exec(
                select(Message.id).where(col(Message.id).in_(held), _finished_before(cutoff))
            ).all()
        )
        if held
        else set()
    )
    ok = {i for i in finished if i is not None} - busy
    members = {i for i in batch if i in ok}
    members -= {about for nid, about in notices if nid not in ok}
    return members | {nid for nid, about in notices if about in members}


@dataclass(frozen=True, slots=True)
class _Deleted:
    messages: int
    paths: frozenset[str]
    """The stored copies of the deleted rows (removed if nothing else refers to them)."""


def _delete_batch(session: Session, batch: list[int], cutoff: datetime) -> _Deleted:
    """One write job: delete what of ``batch`` can go, children first (PostgreSQL
    and SQLite with ``foreign_keys=ON`` both enforce the references)."""
    doomed = _doomed(session, batch, cutoff, lock=True)
    if not doomed:
        return _Deleted(0, frozenset())
    ids = sorted(doomed)
    paths = _paths_of(
        session.exec(
            select(Message.received_path, Message.delivered_path).where(col(Message.id).in_(ids))
        ).all()
    )
    deliveries = select(Delivery.id).where(col(Delivery.message_id).in_(ids))
    session.execute(delete(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(deliveries)))
    session.execute(delete(Delivery).where(col(Delivery.message_id).in_(ids)))
    session.execute(delete(RuleHit).where(col(RuleHit.message_id).in_(ids)))
    # A campaign's send records outlive its messages: they are its report.
    session.execute(
        update(CampaignSend).where(col(CampaignSend.message_id).in_(ids)).values(message_id=None)
    )
    # Notices first: a notice refers to the message it reports on.
    notices: Any = session.execute(
        delete(Message).where(col(Message.id).in_(ids), col(Message.about_message_id).is_not(None))
    )
    rest: Any = session.execute(delete(Message).where(col(Message.id).in_(ids)))
    return _Deleted(int(notices.rowcount) + int(rest.rowcount), paths)


def _paths_of(rows: Iterable[tuple[str | None, str | None]]) -> frozenset[str]:
    return frozenset(p for row in rows for p in row if p)


def _dry_batch(session: Session, batch: list[int], cutoff: datetime) -> tuple[set[int], int]:
    """What ``_delete_batch`` would delete, and how many copies would go with it.

    A copy is counted once: in the batch of the last row referring to it, and only
    if every row referring to it could be purged."""
    doomed = _doomed(session, batch, cutoff, lock=False)
    if not doomed:
        return doomed, 0
    mine = _paths_of(
        session.exec(
            select(Message.received_path, Message.delivered_path).where(
                col(Message.id).in_(sorted(doomed))
            )
        ).all()
    )
    refs = _references(session, mine)
    others = sorted({i for ids in refs.values() for i in ids} - doomed)
    could_go = set(doomed)
    for start in range(0, len(others), BATCH_SIZE):
        chunk = others[start : start + BATCH_SIZE]
        could_go |= _doomed(session, chunk, cutoff, lock=False) & set(chunk)
    copies = sum(1 for ids in refs.values() if ids <= could_go and max(ids, default=0) in doomed)
    return doomed, copies


def _references(session: Session, paths: Collection[str]) -> dict[str, set[int]]:
    """Path → the ids of the rows that refer to it (either column)."""
    refs: dict[str, set[int]] = {p: set() for p in paths}
    if not paths:
        return refs
    listed = sorted(paths)
    for mid, received, delivered in session.exec(
        select(Message.id, Message.received_path, Message.delivered_path).where(
            or_(col(Message.received_path).in_(listed), col(Message.delivered_path).in_(listed))
        )
    ).all():
        for p in (received, delivered):
            if p in refs and mid is not None:
                refs[p].add(mid)
    return refs


def _remove_copies(
    db: Database, archive: Archive, paths: frozenset[str], cutoff: datetime
) -> tuple[int, int]:
    """Remove the files of ``paths`` that no row refers to any more; returns
    (removed, could not be removed).  Runs after the deletions committed: rows
    that share a copy are written together, and no later row ever refers to an
    existing copy, so a copy unreferenced now stays so."""
    still = {p for p, ids in db.call(_references, paths).items() if ids}
    root = archive.root.resolve()
    removed = failed = 0
    parents: set[Path] = set()
    for rel in sorted(paths - still):
        path = (archive.root / rel).resolve()
        if not path.is_relative_to(root) or path == root:
            log.warning("archive purge: not removing %r, outside the archive", rel)
            failed += 1
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # already gone (another purge, or by hand): nothing to do
        except OSError as exc:
            if not failed:
                log.warning("archive purge: cannot remove %s: %s", path, exc)
            failed += 1
            continue
        removed += 1
        parents.add(path.parent)
    _remove_empty_dirs(root, parents, cutoff.date())
    return removed, failed


def _remove_empty_dirs(root: Path, dirs: Iterable[Path], before: date) -> None:
    """Remove ``YYYY/MM/DD`` directories (then their month and year) that are
    empty and wholly before ``before``: the relay stores today's copies under
    today's date, so it never writes into one of these."""
    for day_dir in sorted(dirs, reverse=True):
        parts = day_dir.relative_to(root).parts
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue
        try:
            year, month, day = (int(p) for p in parts)
            day_date = date(year, month, day)
        except ValueError:
            continue
        candidates = [
            (day_dir, day_date < before),
            (day_dir.parent, (year, month) < (before.year, before.month)),
            (day_dir.parent.parent, year < before.year),
        ]
        for directory, old in candidates:
            if not old:
                break
            try:
                directory.rmdir()
            except OSError:
                break  # not empty (or gone): its parents are not empty either


def _purge_thread_ids(
    db: Database, cutoff: datetime, batch_size: int, dry_run: bool, stop: Callable[[], bool]
) -> int:
    """Purge (or count) the ``message_id_map`` rows older than ``cutoff``."""
    total = 0
    after = 0
    while not stop():
        ids = db.call(_old_thread_ids, cutoff, after, batch_size)
        if not ids:
            break
        after = ids[-1]
        total += len(ids) if dry_run else db.write(_delete_thread_ids, ids, cutoff)
    return total


def _old_thread_ids(session: Session, cutoff: datetime, after: int, limit: int) -> list[int]:
    query = (
        select(MessageIdMap.id)
        .where(col(MessageIdMap.id) > after, col(MessageIdMap.created_at) < cutoff)
        .order_by(col(MessageIdMap.id))
        .limit(limit)
    )
    return [i for i in session.exec(query).all() if i is not None]


def _delete_thread_ids(session: Session, ids: list[int], cutoff: datetime) -> int:
    result: Any = session.execute(
        delete(MessageIdMap).where(
            col(MessageIdMap.id).in_(ids), col(MessageIdMap.created_at) < cutoff
        )
    )
    return int(result.rowcount)


def _kept(session: Session, cutoff: datetime) -> tuple[int, int, int]:
    """(quarantined, undelivered, all) among the rows older than ``cutoff``."""
    old = col(Message.created_at) < cutoff
    pending = _has_pending_delivery()

    def count(*where: ColumnElement[bool]) -> int:
        return int(session.exec(select(func.count()).select_from(Message).where(*where)).one())

    quarantined = count(old, col(Message.status) == MessageStatus.QUARANTINED)
    undelivered = count(
        old,
        col(Message.status) != MessageStatus.QUARANTINED,
        or_(col(Message.status) == MessageStatus.QUEUED, pending),
    )
    return quarantined, undelivered, count(old)


# --- the running relay's daily purge ----------------------------------------------


class PurgeTask:
    """The running relay's purge: shortly after start, then every ``INTERVAL``.

    The work runs in a thread (database reads and writes, file removal), so the
    event loop never waits for it.  A failed run is logged and tried again at
    the next one; nothing here can stop the relay.  ``stop`` lets a run in
    progress finish its current batch and returns when it has.
    """

    def __init__(
        self,
        db: Database,
        archive: Archive,
        retention_days: int,
        *,
        first_delay: float | None = None,
        interval: float | None = None,
    ) -> None:
        self.db = db
        self.archive = archive
        self.retention_days = retention_days
        self.first_delay = FIRST_DELAY if first_delay is None else first_delay
        self.interval = INTERVAL if interval is None else interval
        self.runs = 0
        """Completed runs, successful or not (for tests and curious admins)."""
        self._stopping = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start_if_enabled(
        cls, db: Database, archive: Archive, config: ArchiveConfig
    ) -> PurgeTask | None:
        """Start the task when ``archive.retention_days`` is set; None otherwise."""
        if config.retention_days is None:
            return None
        task = cls(db, archive, config.retention_days)
        task.start()
        return task

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay-archive-purge")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self.first_delay * (1 + random.random())
        while not await self._sleep(delay):
            await self.run_once()
            delay = self.interval

    async def run_once(self) -> PurgeReport | None:
        """One purge, logged; None if it failed (the error is logged)."""
        try:
            report = await asyncio.to_thread(
                purge,
                self.db,
                self.archive,
                self.retention_days,
                should_stop=self._stopping.is_set,
            )
        except StorageUnavailable as exc:
            log.error("archive purge failed, trying again at the next run: %s", exc)
            return None
        except Exception:
            log.exception("archive purge failed, trying again at the next run")
            return None
        finally:
            self.runs += 1
        log.info("archive purge: %s", report.describe())
        metrics.PURGED.labels("messages").inc(report.messages)
        metrics.PURGED.labels("copies").inc(report.copies)
        return report

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; True if the task is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        return self._stopping.is_set()
