"""The archive: every message as received and as delivered, with its verdicts and
delivery history (README, introduction).

Copies are files under ``archive.path``, each created under a unique name and
fsynced, its directory fsynced too, *before* the database transaction that
refers to them commits.  So a
committed row always points at a file that is on disk; a crash between the two
leaves at most an orphan file, never a row without its copy.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, func, select

from relay.core import metrics
from relay.core.clock import as_utc
from relay.core.durable import sync_dir, write_new
from relay.storage import decisions
from relay.storage.models import (
    Conversation,
    Delivery,
    DeliveryAttempt,
    Message,
    RuleHit,
    utcnow,
)


class ArchiveError(Exception):
    """An archived copy could not be written or read."""


class Archive:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[Path] = set()
        """Day directories known to exist: no ``mkdir`` per copy."""
        self._local = threading.local()

    def store(self, data: bytes, kind: str) -> str:
        """Write ``data`` durably; returns its path relative to the archive root.

        The file is fsynced before this returns.  The directory entry is too,
        unless the call is inside ``batch()``, which fsyncs each directory once
        when it ends (before the commit that refers to the files)."""
        now = utcnow()
        day = Path(f"{now:%Y/%m/%d}")
        rel = day / f"{now:%H%M%S}-{secrets.token_hex(8)}.{kind}.eml"
        directory = self.root / day
        try:
            with metrics.timed("archive"):
                if directory not in self._made:
                    directory.mkdir(parents=True, exist_ok=True)
                    self._made.add(directory)
                try:
                    write_new(self.root / rel, data)
                except FileNotFoundError:  # the directory was removed behind our back
                    directory.mkdir(parents=True, exist_ok=True)
                    write_new(self.root / rel, data)
                pending: set[Path] | None = getattr(self._local, "pending", None)
                if pending is None:
                    sync_dir(directory)
                else:
                    pending.add(directory)
        except OSError as exc:
            raise ArchiveError(f"cannot write archive copy: {exc}") from exc
        return rel.as_posix()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Copies stored inside share their directories' fsyncs, made on the way
        out: a message's received and delivered copies cost one directory fsync,
        not one each.  Nothing may refer to them (no commit) before it ends."""
        if getattr(self._local, "pending", None) is not None:  # nested: the outer one syncs
            yield
            return
        pending: set[Path] = set()
        self._local.pending = pending
        try:
            yield
        finally:
            self._local.pending = None
        try:
            for directory in pending:
                sync_dir(directory)
        except OSError as exc:
            raise ArchiveError(f"cannot write archive copy: {exc}") from exc

    def read(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except OSError as exc:
            raise ArchiveError(f"cannot read archive copy {rel}: {exc}") from exc

    def check_writable(self) -> None:
        """Raises ArchiveError if the archive directory cannot be written.

        The probe goes through ``store`` (the same directories and fsyncs a real
        copy takes) and is removed again, so restarts leave nothing behind."""
        rel = self.store(b"", "probe")
        (self.root / rel).unlink(missing_ok=True)


# --- queries for the CLI and the API ---------------------------------------


@dataclass(frozen=True, slots=True)
class MessageSummary:
    message: Message
    hits: list[RuleHit]

    def as_json(self) -> dict[str, Any]:
        m = self.message
        return {
            "id": m.id,
            "conversation_id": m.conversation_id,
            "direction": m.direction.value,
            "status": m.status.value,
            "status_reason": m.status_reason,
            "subject": m.subject,
            "envelope_from": m.envelope_from,
            "recipient": m.recipient,
            "about_message_id": m.about_message_id,
            "trace_id": m.trace_id,
            "created_at": iso(m.created_at),
            "rule_hits": [
                {"rule_id": h.rule_id, "action": h.action, "where": h.location, "detail": h.detail}
                for h in self.hits
            ],
        }


def count_messages(session: Session, *, conversation_id: int) -> int:
    query = (
        select(func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
    )
    return int(session.exec(query).one())


def list_messages(
    session: Session,
    *,
    conversation_id: int | None = None,
    status: str | None = None,
    direction: str | None = None,
    seller_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    rule_id: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[MessageSummary]:
    """Messages newest first (by id), with their rule hits.

    ``seller_id`` keeps that seller's conversations; ``since`` and ``until``
    bound ``created_at`` (``since <= created_at < until``); ``rule_id`` keeps
    messages the rule hit; ``before_id`` keeps ids below it, so that a listing
    walked page by page (the API's cursor) is not shifted by new messages.
    """
    query = select(Message).order_by(col(Message.id).desc()).limit(limit)
    if conversation_id is not None:
        query = query.where(Message.conversation_id == conversation_id)
    if status is not None:
        query = query.where(Message.status == status)
    if direction is not None:
        query = query.where(Message.direction == direction)
    if seller_id is not None:
        mine = select(Conversation.id).where(Conversation.seller_id == seller_id)
        query = query.where(col(Message.conversation_id).in_(mine))
    if since is not None:
        query = query.where(Message.created_at >= since)
    if until is not None:
        query = query.where(Message.created_at < until)
    if rule_id is not None:
        hit_by = select(RuleHit.message_id).where(RuleHit.rule_id == rule_id)
        query = query.where(col(Message.id).in_(hit_by))
    if before_id is not None:
        query = query.where(col(Message.id) < before_id)
    messages = list(session.exec(query).all())
    ids = [m.id for m in messages]
    hits: dict[int, list[RuleHit]] = {}
    if ids:
        for hit in session.exec(select(RuleHit).where(col(RuleHit.message_id).in_(ids))).all():
            hits.setdefault(hit.message_id, []).append(hit)
    return [MessageSummary(m, hits.get(m.id or 0, [])) for m in messages]


def message_detail(session: Session, message_id: int) -> dict[str, Any] | None:
    """The archived message's metadata, rule hits and delivery history."""
    message = session.get(Message, message_id)
    if message is None:
        return None
    hits = session.exec(select(RuleHit).where(RuleHit.message_id == message_id)).all()
    detail = MessageSummary(message, list(hits)).as_json()
    detail["original_message_id"] = message.original_message_id
    detail["relay_message_id"] = message.relay_message_id
    detail["received_copy"] = message.received_path
    detail["delivered_copy"] = message.delivered_path
    deliveries = []
    for d in session.exec(select(Delivery).where(Delivery.message_id == message_id)).all():
        attempts = session.exec(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == d.id)
            .order_by(col(DeliveryAttempt.id))
        ).all()
        row = delivery_json(d)
        del row["message_id"]
        row["history"] = [
            {"at": iso(a.at), "outcome": a.outcome, "reply": a.reply} for a in attempts
        ]
        deliveries.append(row)
    detail["deliveries"] = deliveries
    detail["decisions"] = decisions.listed(session, decisions.message_subject(message_id))
    return detail


def delivery_json(d: Delivery) -> dict[str, Any]:
    """One delivery as ``relay queue list --json`` prints it."""
    return {
        "id": d.id,
        "message_id": d.message_id,
        "recipient": d.recipient,
        "envelope_from": d.envelope_from,
        "status": d.status.value,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at),
        "last_reply": d.last_reply,
    }


def iso(value: datetime | None) -> str | None:
    """``2026-01-31T12:00:00Z``: what the CLI's JSON uses for every timestamp."""
    if value is None:
        return None
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")
