"""``/api/v1/archive``, ``/quarantine``, ``/queue``: what the relay holds.

The twins of ``relay archive list|show``, ``relay quarantine list|release|reject``
and ``relay queue list|retry``, through the same functions
(``relay.storage.archive``, ``relay.pipeline.quarantine``, ``relay.delivery.spool``),
so the rules and the refusals' words are the CLI's.

An admin key sees everything.  A seller key sees the archive entries of its own
conversations, and in them every address is the party's token: a buyer's real
address (the ``envelope_from`` of a buyer's message, the ``recipient`` of a
message to the buyer, a downstream server's reply that quotes it) is written as
the buyer's token, the seller's own as its token, any other address as
``[address]`` (``relay.delivery.notices.sanitize``, what notices do).  The
stored copies hold the real addresses, so only an admin may fetch them; the
quarantine and the queue are the admin's too.  A brand key sees none of these.

Listings are paged by an opaque cursor that stands for "older than the last
message of this page" (ids only grow): walking the pages while mail arrives
neither skips nor repeats a message.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlmodel import Session

from relay.api.auth import Admin, Caller
from relay.api.decided import DecisionOut, actor
from relay.api.problems import Kind, Problem
from relay.core.config import RelayConfig
from relay.core.scopes import Role, Scope
from relay.delivery import notices, spool
from relay.filters import load_rules
from relay.message.tokenizer import AddressMap
from relay.ops.response_times import parse_since
from relay.pipeline import quarantine
from relay.storage import archive as archive_mod
from relay.storage import decisions
from relay.storage.archive import Archive
from relay.storage.db import Database
from relay.storage.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    MessageStatus,
)

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=200, description="At most this many entries, 1 to 200.")]
Cursor = Annotated[
    str | None, Query(description="The `next_cursor` of the previous page; none for the first.")
]


class RuleHitOut(BaseModel):
    rule_id: str
    action: str
    where: str
    """Where in the message the rule matched; "" for the message as a whole."""
    detail: str


class ArchiveEntry(BaseModel):
    """One archived message, as ``relay archive list --json`` prints it."""

    id: int
    conversation_id: int | None
    direction: Direction
    status: MessageStatus
    status_reason: str
    subject: str
    envelope_from: str
    """The real envelope sender (admin); for a seller key, the party's token."""
    recipient: str
    """The real recipient (admin); for a seller key, the party's token."""
    about_message_id: int | None
    trace_id: str | None
    created_at: datetime
    rule_hits: list[RuleHitOut]


class ArchivePage(BaseModel):
    items: list[ArchiveEntry]
    next_cursor: str | None
    """Pass it as ``cursor`` for the next, older page; null on the last page."""


class Attempt(BaseModel):
    at: datetime
    outcome: str
    reply: str


class DeliveryRecord(BaseModel):
    id: int
    recipient: str
    envelope_from: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_reply: str
    history: list[Attempt]


class ArchiveDetail(ArchiveEntry):
    """One message as ``relay archive show --json`` prints it, with the copies'
    paths replaced by whether each copy is stored."""

    original_message_id: str | None
    """The sender's Message-ID; null for a seller key, except on its own messages."""
    relay_message_id: str | None
    received_copy: bool
    """Whether the message as received is stored (admin: ``GET .../received``)."""
    delivered_copy: bool
    """Whether the message as delivered is stored (admin: ``GET .../delivered``)."""
    deliveries: list[DeliveryRecord]
    decisions: list[DecisionOut] | None = None
    """Who released or rejected it from quarantine; admin keys only (else null)."""


class QueueEntry(BaseModel):
    """One delivery, as ``relay queue list --json`` prints it."""

    id: int
    message_id: int
    recipient: str
    envelope_from: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_reply: str


class Decision(BaseModel):
    message_id: int
    status: MessageStatus
    """What became of the message: ``queued`` once released, ``rejected``."""


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _config(request: Request) -> RelayConfig:
    config: RelayConfig = request.app.state.config
    return config


def invalid(field: str, problem: str) -> Problem:
    """A 422 naming one query parameter, as FastAPI's own validation does."""
    return Problem(
        Kind.VALIDATION,
        f"invalid fields: {field}",
        errors=[{"field": field, "problem": problem}],
    )


def date_param(name: str, value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` or an ISO datetime, UTC unless it says (as ``--since``)."""
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError:
        raise invalid(
            f"query.{name}", f"{value!r} is not a date (YYYY-MM-DD) or an ISO datetime"
        ) from None


def encode_cursor(before_id: int) -> str:
    raw = json.dumps({"before": before_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id the page starts below; a cursor this API did not give is a 422."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        before = data["before"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise invalid("query.cursor", "not a cursor this API gave") from None
    if type(before) is not int or not 0 < before < 2**63:
        raise invalid("query.cursor", "not a cursor this API gave")
    return before


def _lister(scope: Scope) -> int | None:
    """The seller whose conversations a key lists (None: all); 403 for a brand."""
    if scope.is_admin:
        return None
    if scope.role is Role.SELLER:
        return scope.id
    raise Problem(Kind.FORBIDDEN, f"a {scope.role.value} key may not do this")


class Masks:
    """For a seller key: each conversation's address map, to write tokens for
    addresses (looked up once per conversation per request)."""

    def __init__(self, session: Session, domain: str) -> None:
        self.session = session
        self.domain = domain
        self._maps: dict[int | None, AddressMap] = {}

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        conv = row["conversation_id"]
        if conv not in self._maps:
            self._maps[conv] = notices.conversation_party_map(self.session, conv, self.domain)
        amap = self._maps[conv]
        if "original_message_id" in row and row["direction"] != Direction.SELLER_TO_BUYER:
            row["original_message_id"] = None  # the buyer's own, never passed on

        def clean(value: Any, key: str = "") -> Any:
            if isinstance(value, str) and key != "original_message_id":
                return notices.sanitize(value, amap, self.domain)
            if isinstance(value, dict):
                return {k: clean(v, k) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        cleaned: dict[str, Any] = clean(row)
        return cleaned


def _page(
    request: Request,
    scope: Scope,
    *,
    limit: int,
    cursor: str | None,
    **filters: Any,
) -> ArchivePage:
    seller_id = _lister(scope)
    before_id = decode_cursor(cursor)
    domain = _config(request).marketplace.domain

    def run(s: Session) -> list[dict[str, Any]]:
        found = archive_mod.list_messages(
            s, seller_id=seller_id, before_id=before_id, limit=limit + 1, **filters
        )
        rows = [m.as_json() for m in found]
        if seller_id is not None:
            masks = Masks(s, domain)
            rows = [masks.apply(r) for r in rows]
        return rows

    rows = _db(request).call(run)
    more = len(rows) > limit
    rows = rows[:limit]
    return ArchivePage(
        items=[ArchiveEntry.model_validate(r) for r in rows],
        next_cursor=encode_cursor(rows[-1]["id"]) if more else None,
    )


@router.get("/archive", response_model=ArchivePage, tags=["archive"])
def list_archive(
    request: Request,
    scope: Caller,
    conversation: int | None = None,
    status: MessageStatus | None = None,
    direction: Direction | None = None,
    since: Annotated[
        str | None, Query(description="Created at or after: YYYY-MM-DD or ISO datetime, UTC.")
    ] = None,
    until: Annotated[
        str | None, Query(description="Created before: YYYY-MM-DD or ISO datetime, UTC.")
    ] = None,
    rule: Annotated[str | None, Query(description="Only messages this rule id hit.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ArchivePage:
    """Archived messages, newest first, with direction, status and rule hits
    (``relay archive list``).  A seller key gets its own conversations' only,
    with tokens for addresses; a brand key gets 403."""
    return _page(
        request,
        scope,
        limit=limit,
        cursor=cursor,
        conversation_id=conversation,
        status=status,
        direction=direction,
        since=date_param("since", since),
        until=date_param("until", until),
        rule_id=rule,
    )


def _visible(s: Session, scope: Scope, message_id: int) -> dict[str, Any]:
    detail = archive_mod.message_detail(s, message_id)
    conv = detail and detail["conversation_id"]
    if not scope.is_admin:
        owner = s.get(Conversation, conv) if conv is not None else None
        if owner is None or not scope.sees_seller(owner.seller_id):
            detail = None
    if detail is None:
        raise Problem(Kind.NOT_FOUND, f"no archived message with id {message_id}")
    return detail


@router.get("/archive/{message_id}", response_model=ArchiveDetail, tags=["archive"])
def show_archive(message_id: int, request: Request, scope: Caller) -> ArchiveDetail:
    """One archived message: its metadata, rule hits and deliveries with their
    attempts (``relay archive show``).  Another seller's message is a 404."""
    domain = _config(request).marketplace.domain

    def run(s: Session) -> dict[str, Any]:
        detail = _visible(s, scope, message_id)
        detail["received_copy"] = detail["received_copy"] is not None
        detail["delivered_copy"] = detail["delivered_copy"] is not None
        if not scope.is_admin:
            detail["decisions"] = None
        return detail if scope.is_admin else Masks(s, domain).apply(detail)

    return ArchiveDetail.model_validate(_db(request).call(run))


COPY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"message/rfc822": {}}, "description": "The stored copy"}
}


def _copy(request: Request, scope: Scope, message_id: int, which: str) -> Response:
    detail = _db(request).call(_visible, scope, message_id)
    rel = detail[f"{which}_copy"]
    if not rel:
        raise Problem(Kind.NOT_FOUND, f"message {message_id} has no {which} copy")
    data = Archive(_config(request).archive.path).read(rel)
    return Response(content=data, media_type="message/rfc822")


@router.get(
    "/archive/{message_id}/received",
    response_class=Response,
    responses=COPY,
    tags=["archive"],
)
def received_copy(message_id: int, request: Request, scope: Admin) -> Response:
    """The message as received, byte for byte (``relay archive show --raw``).
    Admin only: it holds the sender's real address."""
    return _copy(request, scope, message_id, "received")


@router.get(
    "/archive/{message_id}/delivered",
    response_class=Response,
    responses=COPY,
    tags=["archive"],
)
def delivered_copy(message_id: int, request: Request, scope: Admin) -> Response:
    """The message as delivered (``relay archive show --delivered``).  Admin only:
    it holds the recipient's real address."""
    return _copy(request, scope, message_id, "delivered")


# --- quarantine ------------------------------------------------------------------


@router.get("/quarantine", response_model=ArchivePage, tags=["quarantine"])
def list_quarantine(
    request: Request, scope: Admin, limit: Limit = 50, cursor: Cursor = None
) -> ArchivePage:
    """Held messages, newest first, with the rules that held them (``relay quarantine list``)."""
    return _page(request, scope, limit=limit, cursor=cursor, status=MessageStatus.QUARANTINED)


def _decide(request: Request, message_id: int, *, release: bool) -> Decision:
    # As ``relay quarantine``: the rules as the file says now, the decision in
    # one transaction (here the writer's: this process also accepts mail).
    config = _config(request)
    rules = load_rules(config.filters.rules)
    archive = Archive(config.archive.path)
    Action = decisions.Action
    decide = decisions.recorded(
        quarantine.release if release else quarantine.reject,
        actor=actor(request),
        action=Action.QUARANTINE_RELEASE if release else Action.QUARANTINE_REJECT,
        subject=decisions.message_subject(message_id),
    )
    outcome = _db(request).write(decide, message_id, config=config, archive=archive, rules=rules)
    return Decision(message_id=message_id, status=MessageStatus(outcome.status))


@router.post("/quarantine/{message_id}/release", response_model=Decision, tags=["quarantine"])
def release_quarantined(message_id: int, request: Request, _scope: Admin) -> Decision:
    """Deliver a held message; strip and redact rules still apply
    (``relay quarantine release``).  Not held: 409; unknown: 404."""
    return _decide(request, message_id, release=True)


@router.post("/quarantine/{message_id}/reject", response_model=Decision, tags=["quarantine"])
def reject_quarantined(message_id: int, request: Request, _scope: Admin) -> Decision:
    """Refuse a held message; its sender gets the rule's notice (``relay quarantine reject``)."""
    return _decide(request, message_id, release=False)


# --- queue ---------------------------------------------------------------------


@router.get("/queue", response_model=list[QueueEntry], tags=["queue"])
def list_queue(request: Request, _scope: Admin, all: bool = False) -> list[QueueEntry]:
    """Deliveries waiting in the outbound queue, oldest first, at most 200
    (``relay queue list``); ``all=true`` includes finished ones."""
    rows = _db(request).call(
        lambda s: [archive_mod.delivery_json(d) for d in spool.list_queue(s, include_done=all)]
    )
    return [QueueEntry.model_validate(r) for r in rows]


@router.post("/queue/{delivery_id}/retry", response_model=QueueEntry, tags=["queue"])
def retry_delivery(delivery_id: int, request: Request, _scope: Admin) -> QueueEntry:
    """Make a delivery due now; a failed one goes back in the queue
    (``relay queue retry``).  A delivered one is a 409."""

    def run(s: Session) -> dict[str, Any]:
        d = spool.retry_now(s, delivery_id)
        if d is None:
            raise Problem(Kind.NOT_FOUND, f"no delivery with id {delivery_id}")
        if d.status is DeliveryStatus.DELIVERED:
            raise Problem(Kind.CONFLICT, f"delivery {delivery_id} was delivered; nothing to retry")
        return archive_mod.delivery_json(d)

    return QueueEntry.model_validate(_db(request).write(run))
