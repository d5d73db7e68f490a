"""Sellers, buyers, orders and conversations: the marketplace's directory.

These functions take a session and are what both the CLI and the relay use; the
same calls are the Python API for a marketplace back end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    Integer,
    ScalarSelect,
    Table,
    bindparam,
    func,
    insert,
    or_,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from relay.core import addresses, names
from relay.core.refusals import Refusal, Refused
from relay.core.tokens import new_token, token_address
from relay.storage.models import (
    Buyer,
    Conversation,
    Direction,
    Message,
    Order,
    Party,
    Seller,
    SellerAddress,
    utcnow,
)


class DirectoryError(Exception):
    """An administrative request that cannot be carried out (unknown id, duplicate...)."""


class NotFound(DirectoryError):
    """What the request names does not exist (an HTTP API's 404)."""


class Conflict(DirectoryError):
    """It exists already, or belongs to someone else (an HTTP API's 409)."""


# --- sellers ----------------------------------------------------------------


def checked_name(field: str, text: str, *, max_length: int = names.MAX_NAME) -> str:
    """``names.check`` with its refusal as a DirectoryError: a name that would
    be written into headers is refused where it enters (``relay.core.names``)."""
    try:
        return names.check(field, text, max_length=max_length)
    except names.NameProblem as exc:
        raise DirectoryError(str(exc)) from None


def optional_name(text: str, field: str = "buyer name") -> str:
    """A name that may be left out (a buyer's): empty, or ``checked_name``."""
    return checked_name(field, text) if text.strip() else ""


def add_seller(session: Session, *, name: str, emails: Sequence[str]) -> Seller:
    if not name.strip():
        raise DirectoryError("a seller needs a name")
    name = checked_name("seller name", name)
    if not emails:
        raise DirectoryError("a seller needs at least one approved sender address")
    normalized = [normalize_email(e) for e in emails]
    seller = Seller(name=name)
    session.add(seller)
    session.flush()
    assert seller.id is not None
    for i, email in enumerate(dict.fromkeys(normalized)):
        _claim_seller_address(session, seller.id, email, primary=(i == 0))
    session.flush()
    return seller


def _claim_seller_address(session: Session, seller_id: int, email: str, *, primary: bool) -> None:
    if session.exec(select(Buyer).where(Buyer.email == email)).first() is not None:
        raise Conflict(f"{email} is a buyer's address and cannot be a seller address")
    existing = session.exec(select(SellerAddress).where(SellerAddress.email == email)).first()
    if existing is not None:
        if existing.seller_id == seller_id:
            return
        raise Conflict(f"{email} is already an address of seller {existing.seller_id}")
    session.add(SellerAddress(seller_id=seller_id, email=email, is_primary=primary))


def get_seller(session: Session, seller_id: int) -> Seller:
    seller = session.get(Seller, seller_id)
    if seller is None:
        raise NotFound(f"no seller with id {seller_id}")
    return seller


def seller_addresses(session: Session, seller_id: int) -> list[SellerAddress]:
    rows = session.exec(
        select(SellerAddress)
        .where(SellerAddress.seller_id == seller_id)
        .order_by(col(SellerAddress.is_primary).desc(), col(SellerAddress.id))
    ).all()
    return list(rows)


def update_seller(
    session: Session,
    seller_id: int,
    *,
    messaging: bool | None = None,
    add_emails: Sequence[str] = (),
    remove_emails: Sequence[str] = (),
) -> Seller:
    seller = get_seller(session, seller_id)
    if messaging is not None:
        seller.messaging_enabled = messaging
    for email in add_emails:
        _claim_seller_address(session, seller_id, normalize_email(email), primary=False)
    session.flush()
    for email in remove_emails:
        email = normalize_email(email)
        row = session.exec(
            select(SellerAddress).where(
                SellerAddress.email == email, SellerAddress.seller_id == seller_id
            )
        ).first()
        if row is None:
            raise DirectoryError(f"{email} is not an address of seller {seller_id}")
        session.delete(row)
    session.flush()
    remaining = seller_addresses(session, seller_id)
    if not remaining:
        raise DirectoryError("a seller must keep at least one approved sender address")
    if not any(a.is_primary for a in remaining):
        remaining[0].is_primary = True
    session.add(seller)
    session.flush()
    return seller


# --- buyers, orders, conversations -----------------------------------------


def find_buyer(session: Session, email: str) -> Buyer | None:
    return session.exec(select(Buyer).where(Buyer.email == normalize_email(email))).first()


def set_opt_out(session: Session, email: str, opted_out: bool) -> Buyer:
    buyer = find_buyer(session, email)
    if buyer is None:
        raise NotFound(f"no buyer with address {email}")
    buyer.opted_out = opted_out
    session.add(buyer)
    session.flush()
    return buyer


def ensure_conversation(session: Session, buyer_id: int, seller_id: int) -> Conversation:
    conv = session.exec(
        select(Conversation).where(
            Conversation.buyer_id == buyer_id, Conversation.seller_id == seller_id
        )
    ).first()
    if conv is not None:
        return conv
    conv = Conversation(
        buyer_id=buyer_id, seller_id=seller_id, buyer_token=new_token(), seller_token=new_token()
    )
    session.add(conv)
    session.flush()
    return conv


def add_order(
    session: Session,
    order_id: str,
    *,
    buyer_email: str,
    buyer_name: str | None,
    seller_id: int,
    categories: Sequence[str] = (),
) -> tuple[Order, Conversation]:
    """Register an order (``relay order add``): ``place_order``'s rules, rows and
    refusals, except that an order id already taken is refused even for the same
    buyer and seller (the command makes orders; the API's retries are
    idempotent).  Returns the order and its conversation as ORM rows."""
    session.flush()  # what the caller added must be seen by place_order's statements
    try:
        placed = place_order(
            session,
            order_id,
            buyer_email=buyer_email,
            buyer_name=buyer_name,
            seller_id=seller_id,
            categories=categories,
        )
    except OrderTaken as exc:
        raise Conflict(f"order {exc.order_id} already exists") from None
    if not placed.created:
        raise Conflict(f"order {placed.order_id} already exists")
    session.expire_all()  # rows the caller holds (a renamed buyer) are read again
    order = session.get(Order, placed.order_id)
    conv = session.get(Conversation, placed.conversation_id)
    assert order is not None and conv is not None
    return order, conv


class OrderTaken(Conflict):
    """The order id is taken by an order for another buyer or seller."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} already exists, for another buyer or seller")
        self.order_id = order_id


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """What ``place_order`` did: the order's conversation and its tokens."""

    order_id: str
    conversation_id: int
    buyer_token: str
    seller_token: str
    """Bare tokens (no domain)."""
    created: bool
    """False: the same order was placed before, and this is it."""


_ORDERS = Order.__table__  # type: ignore[attr-defined]
_BUYERS = Buyer.__table__  # type: ignore[attr-defined]
_CONVERSATIONS = Conversation.__table__  # type: ignore[attr-defined]
_SELLERS = Seller.__table__  # type: ignore[attr-defined]
_SELLER_ADDRESSES = SellerAddress.__table__  # type: ignore[attr-defined]

_ORDER_CHECKS = core_select(
    core_select(_ORDERS.c.conversation_id)
    .where(_ORDERS.c.id == bindparam("order_id"))
    .scalar_subquery(),
    core_select(_SELLERS.c.id).where(_SELLERS.c.id == bindparam("seller_id")).scalar_subquery(),
    core_select(_SELLER_ADDRESSES.c.id)
    .where(_SELLER_ADDRESSES.c.email == bindparam("email"))
    .limit(1)
    .scalar_subquery(),
    core_select(_BUYERS.c.id).where(_BUYERS.c.email == bindparam("email")).scalar_subquery(),
    core_select(_BUYERS.c.name).where(_BUYERS.c.email == bindparam("email")).scalar_subquery(),
)
"""Everything a new order depends on, in one statement (one round trip)."""

_PLACED = (
    core_select(
        _CONVERSATIONS.c.seller_id,
        _CONVERSATIONS.c.buyer_token,
        _CONVERSATIONS.c.seller_token,
        _BUYERS.c.email,
    )
    .join(_BUYERS, _BUYERS.c.id == _CONVERSATIONS.c.buyer_id)
    .where(_CONVERSATIONS.c.id == bindparam("conversation_id"))
)
_NEW_BUYER = insert(_BUYERS)
_NEW_CONVERSATION = insert(_CONVERSATIONS)
_NEW_ORDER = insert(_ORDERS)
"""Built once: the values come as parameters, so each INSERT is compiled once."""
_CONVERSATION_OF = core_select(
    _CONVERSATIONS.c.id, _CONVERSATIONS.c.buyer_token, _CONVERSATIONS.c.seller_token
).where(
    _CONVERSATIONS.c.buyer_id == bindparam("buyer_id"),
    _CONVERSATIONS.c.seller_id == bindparam("seller_id"),
)


def place_order(
    session: Session,
    order_id: str,
    *,
    buyer_email: str,
    buyer_name: str | None,
    seller_id: int,
    categories: Sequence[str] = (),
) -> PlacedOrder:
    """Register an order, idempotently: the same order placed again (same
    buyer, same seller) is answered with what the first made; another order
    under that id is ``OrderTaken``.  The API's ``POST /orders``, and through
    ``add_order`` the command line's: one set of rules for both.

    Core statements: one SELECT for what the order depends on, then plain
    INSERTs.  Through the ORM's identity map and unit of work the same work
    cost twice the CPU, in the writer thread that every write waits for.
    """
    order_id = order_id.strip()
    try:
        email: str | None = normalize_email(buyer_email)
        bad_email: DirectoryError | None = None
    except DirectoryError as exc:
        email, bad_email = None, exc
    conn = session.connection()
    placed_in, seller, taken, buyer_id, known_name = conn.execute(
        _ORDER_CHECKS, {"order_id": order_id, "seller_id": seller_id, "email": email}
    ).one()
    if placed_in is not None:
        conv_seller, buyer_token, seller_token, placed_for = conn.execute(
            _PLACED, {"conversation_id": placed_in}
        ).one()
        if bad_email is not None:
            raise bad_email
        if conv_seller != seller_id or placed_for != email:
            raise OrderTaken(order_id)
        return PlacedOrder(order_id, placed_in, buyer_token, seller_token, created=False)
    if not order_id:
        raise DirectoryError("an order needs an id")
    name = optional_name(buyer_name or "")
    if seller is None:
        raise NotFound(f"no seller with id {seller_id}")
    if bad_email is not None:
        raise bad_email
    if taken is not None:
        raise Conflict(f"{email} is a seller address and cannot be a buyer")
    now = utcnow()
    conv: tuple[int, str, str] | None = None
    if buyer_id is None:
        buyer_id = _inserted(conn, _NEW_BUYER, email=email, name=name, created_at=now)
    else:
        if name and name != known_name:
            conn.execute(update(_BUYERS).where(_BUYERS.c.id == buyer_id).values(name=name))
        row = conn.execute(_CONVERSATION_OF, {"buyer_id": buyer_id, "seller_id": seller_id}).first()
        conv = (row[0], row[1], row[2]) if row is not None else None
    if conv is None:
        tokens = new_token(), new_token()
        conv_id = _inserted(
            conn,
            _NEW_CONVERSATION,
            buyer_id=buyer_id,
            seller_id=seller_id,
            buyer_token=tokens[0],
            seller_token=tokens[1],
            created_at=now,
        )
        conv = (conv_id, *tokens)
    cats = " ".join(sorted({c.strip().lower() for c in categories if c.strip()}))
    try:
        conn.execute(
            _NEW_ORDER,
            {"id": order_id, "conversation_id": conv[0], "categories": cats, "created_at": now},
        )
    except IntegrityError:
        raise Conflict(f"order {order_id} already exists") from None
    return PlacedOrder(order_id, conv[0], conv[1], conv[2], created=True)


def _inserted(conn: Connection, statement: Insert, **values: object) -> int:
    key = conn.execute(statement, values).inserted_primary_key
    assert key is not None
    return int(key[0])


def find_order(session: Session, order_id: str) -> tuple[Order, Conversation, Buyer] | None:
    """An order with its conversation and buyer, or None."""
    order = session.get(Order, order_id.strip())
    if order is None:
        return None
    conv = session.get(Conversation, order.conversation_id)
    assert conv is not None
    buyer = session.get(Buyer, conv.buyer_id)
    assert buyer is not None
    return order, conv, buyer


def recent_messages(
    session: Session,
    *,
    since: datetime,
    envelope_from: str | None = None,
    conversation_id: int | None = None,
    direction: Direction | None = None,
    up_to: int | None = None,
) -> int:
    """Messages (not notices) received since ``since``, for the rate limits;
    counting stops at ``up_to``, so a busy sender costs no more than the limit."""
    query = select(Message.id).where(
        Message.created_at >= since, Message.direction != Direction.NOTICE
    )
    if envelope_from is not None:
        query = query.where(Message.envelope_from == envelope_from)
    if conversation_id is not None:
        query = query.where(Message.conversation_id == conversation_id)
    if direction is not None:
        query = query.where(Message.direction == direction)
    if up_to is not None:
        query = query.limit(up_to)
    return int(session.exec(select(func.count()).select_from(query.subquery())).one())


def _capped_count(*conditions: ColumnElement[bool], up_to: str) -> ScalarSelect[int]:
    """How many messages (not notices) since ``:since`` meet ``conditions``,
    counting no further than the parameter ``up_to`` names."""
    found = (
        core_select(_MESSAGES.c.id)
        .where(
            _MESSAGES.c.created_at >= bindparam("since", type_=_MESSAGES.c.created_at.type),
            _MESSAGES.c.direction != Direction.NOTICE,
            *conditions,
        )
        .limit(bindparam(up_to, type_=Integer))
        .subquery()
    )
    return core_select(func.count()).select_from(found).scalar_subquery()


_MESSAGES = cast(Table, Message.__table__)  # type: ignore[attr-defined]
_RECENT = core_select(
    _capped_count(_MESSAGES.c.envelope_from == bindparam("sender"), up_to="sender_up_to"),
    _capped_count(
        _MESSAGES.c.conversation_id == bindparam("conversation"),
        _MESSAGES.c.direction == bindparam("direction", type_=_MESSAGES.c.direction.type),
        up_to="conversation_up_to",
    ),
)


def recent_counts(
    session: Session,
    *,
    since: datetime,
    envelope_from: str,
    sender_up_to: int,
    conversation_id: int,
    direction: Direction,
    conversation_up_to: int,
) -> tuple[int, int]:
    """The two hourly rate limits' counts in one statement: messages from
    ``envelope_from`` and messages of the conversation in ``direction``, each
    as ``recent_messages`` counts them (up to its limit)."""
    row = (
        session.connection()
        .execute(
            _RECENT,
            {
                "since": since,
                "sender": envelope_from,
                "sender_up_to": sender_up_to,
                "conversation": conversation_id,
                "direction": direction,
                "conversation_up_to": conversation_up_to,
            },
        )
        .one()
    )
    return int(row[0]), int(row[1])


def conversation_categories(session: Session, conversation_id: int) -> frozenset[str]:
    rows = session.exec(
        select(Order.categories).where(Order.conversation_id == conversation_id)
    ).all()
    return frozenset(c for row in rows for c in row.split())


def normalize_email(email: str) -> str:
    try:
        return addresses.normalize(email)
    except addresses.InvalidAddress as exc:
        raise DirectoryError(str(exc)) from None


# --- routing: what a token means for a given sender ------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """Everything the pipeline needs to know about one recipient token."""

    conversation_id: int
    direction: Direction
    buyer_token: str
    seller_token: str
    """Token addresses (``token@domain``)."""
    buyer_email: str
    buyer_name: str
    buyer_opted_out: bool
    seller_id: int
    seller_name: str
    seller_emails: tuple[str, ...]
    """The seller's approved addresses, primary first."""
    buyer_initiated: bool
    has_traffic: bool

    @property
    def sender_party(self) -> Party:
        return Party.BUYER if self.direction is Direction.BUYER_TO_SELLER else Party.SELLER

    @property
    def sender_addresses(self) -> tuple[str, ...]:
        """The real addresses the sender of this route may write from."""
        if self.direction is Direction.BUYER_TO_SELLER:
            return (self.buyer_email,)
        return self.seller_emails

    @property
    def recipient(self) -> str:
        """The real address the message goes to."""
        if self.direction is Direction.BUYER_TO_SELLER:
            return self.seller_emails[0]
        return self.buyer_email

    @property
    def sender_token(self) -> str:
        return (
            self.buyer_token if self.direction is Direction.BUYER_TO_SELLER else self.seller_token
        )

    @property
    def recipient_token(self) -> str:
        return (
            self.seller_token if self.direction is Direction.BUYER_TO_SELLER else self.buyer_token
        )


_ROUTE = (
    core_select(
        _CONVERSATIONS.c.id,
        _CONVERSATIONS.c.buyer_token,
        _CONVERSATIONS.c.seller_token,
        _CONVERSATIONS.c.buyer_initiated,
        _CONVERSATIONS.c.first_message_at,
        _BUYERS.c.email,
        _BUYERS.c.name,
        _BUYERS.c.opted_out,
        _SELLERS.c.id,
        _SELLERS.c.name,
        _SELLERS.c.messaging_enabled,
        _SELLER_ADDRESSES.c.email,
    )
    .select_from(
        _CONVERSATIONS.join(_BUYERS, _BUYERS.c.id == _CONVERSATIONS.c.buyer_id)
        .join(_SELLERS, _SELLERS.c.id == _CONVERSATIONS.c.seller_id)
        .outerjoin(_SELLER_ADDRESSES, _SELLER_ADDRESSES.c.seller_id == _SELLERS.c.id)
    )
    .where(
        or_(
            _CONVERSATIONS.c.buyer_token == bindparam("token"),
            _CONVERSATIONS.c.seller_token == bindparam("token"),
        )
    )
    .order_by(
        _CONVERSATIONS.c.id,
        _SELLER_ADDRESSES.c.is_primary.desc(),
        _SELLER_ADDRESSES.c.id,
    )
)
"""A token's conversation, its buyer, its seller and the seller's approved
addresses (primary first, one row each): a route in one round trip."""


def route(session: Session, token: str, envelope_from: str, *, domain: str) -> Route:
    """The route for mail from ``envelope_from`` to ``token``; raises Refused.

    The envelope sender must be the conversation's buyer when writing to the
    seller token, or an approved address of the conversation's seller when
    writing to the buyer token (README, "What senders are told").

    Read afresh on every call, never cached: other processes (the command line,
    the HTTP API, other relays) change sellers' addresses, opt-outs and
    conversations at any time, and a stale route would send mail to an address
    the seller has given up.
    """
    token = token.lower()
    session.flush()  # what the caller changed in this session is seen
    rows = session.connection().execute(_ROUTE, {"token": token}).all()
    if not rows:
        raise Refused(Refusal.UNKNOWN_RECIPIENT)
    (
        conv_id,
        buyer_token,
        seller_token,
        buyer_initiated,
        first_message_at,
        buyer_email,
        buyer_name,
        buyer_opted_out,
        seller_id,
        seller_name,
        messaging_enabled,
        _email,
    ) = rows[0]
    seller_emails = tuple(r[11] for r in rows if r[0] == conv_id and r[11] is not None)
    try:
        sender = addresses.normalize(envelope_from) if envelope_from else ""
    except addresses.InvalidAddress:
        raise Refused(Refusal.SENDER_NOT_ALLOWED) from None
    if token == seller_token:
        direction = Direction.BUYER_TO_SELLER
        if sender != buyer_email:
            raise Refused(Refusal.SENDER_NOT_ALLOWED)
        if not messaging_enabled and first_message_at is None:
            raise Refused(Refusal.MESSAGING_OFF)
    else:
        direction = Direction.SELLER_TO_BUYER
        if sender not in seller_emails:
            raise Refused(Refusal.SENDER_NOT_ALLOWED)
    if not seller_emails:
        raise Refused(Refusal.UNKNOWN_RECIPIENT)
    return Route(
        conversation_id=conv_id,
        direction=direction,
        buyer_token=token_address(buyer_token, domain),
        seller_token=token_address(seller_token, domain),
        buyer_email=buyer_email,
        buyer_name=buyer_name,
        buyer_opted_out=buyer_opted_out,
        seller_id=seller_id,
        seller_name=seller_name,
        seller_emails=seller_emails,
        buyer_initiated=buyer_initiated,
        has_traffic=first_message_at is not None,
    )
