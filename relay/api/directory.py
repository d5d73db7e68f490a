"""``/api/v1/sellers``, ``/orders``, ``/buyers``, ``/conversations``: the directory.

The same functions as ``relay seller``, ``order``, ``buyer`` and
``conversation`` (``relay.storage.directory``, ``relay.ops.response_times``),
so the rules and the refusals' words are the CLI's.  A seller key sees its own
seller and conversations; anything else is a 404, as if it did not exist.
What a seller key reads never holds a buyer's real address: only tokens.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlmodel import Session

from relay.api import keys
from relay.api.auth import INVALID, Admin, AdminWriter, Caller, KeyCache
from relay.api.problems import Kind, Problem
from relay.core.scopes import Scope
from relay.ops import response_times
from relay.storage import directory
from relay.storage.db import Database
from relay.storage.models import Conversation, Seller

router = APIRouter()

Email = Annotated[str, Field(min_length=3, max_length=320)]
Name = Annotated[str, Field(min_length=1, max_length=1000)]


class Body(BaseModel):
    """A request body: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NewSeller(Body):
    name: Name
    emails: Annotated[list[Email], Field(min_length=1, max_length=50)]


class SellerChange(Body):
    messaging: StrictBool | None = None
    """Whether the seller takes messages from new buyers."""
    add_emails: Annotated[list[Email], Field(max_length=50)] = []
    remove_emails: Annotated[list[Email], Field(max_length=50)] = []


class SellerOut(BaseModel):
    seller_id: int
    name: str
    messaging: bool
    emails: list[str]


class SellerCreated(BaseModel):
    seller_id: int


class NewOrder(Body):
    order_id: Annotated[str, Field(min_length=1, max_length=200)]
    buyer_email: Email
    buyer_name: Annotated[str, Field(max_length=1000)] | None = None
    seller_id: Annotated[int, Field(ge=1)]
    categories: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=50)] = []


class OrderOut(BaseModel):
    order_id: str
    conversation_id: int
    buyer_token: str
    seller_token: str


class BuyerEmail(Body):
    email: Email


class OptOutOut(BaseModel):
    email: str
    opted_out: bool


class ConversationOut(BaseModel):
    conversation_id: int
    seller_id: int
    buyer_token: str
    seller_token: str
    buyer_initiated: bool
    first_message_at: datetime | None


class NoResponseNeeded(BaseModel):
    conversation_id: int
    stopped: int
    """Buyer messages whose response clock this stopped."""


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _domain(request: Request) -> str:
    domain: str = request.app.state.config.marketplace.domain
    return domain


def _seller_out(session: Session, seller: Seller) -> SellerOut:
    assert seller.id is not None
    return SellerOut(
        seller_id=seller.id,
        name=seller.name,
        messaging=seller.messaging_enabled,
        emails=[a.email for a in directory.seller_addresses(session, seller.id)],
    )


def _visible_seller(scope: Scope, seller_id: int) -> None:
    if not scope.sees_seller(seller_id):
        raise Problem(Kind.NOT_FOUND, f"no seller with id {seller_id}")


@router.post("/sellers", status_code=201, response_model=SellerCreated, tags=["directory"])
def create_seller(body: NewSeller, request: Request, _scope: Admin) -> SellerCreated:
    """Register a seller; the first address is where buyers' mail goes."""

    def run(s: Session) -> int:
        seller = directory.add_seller(s, name=body.name, emails=body.emails)
        assert seller.id is not None
        return seller.id

    return SellerCreated(seller_id=_db(request).write(run))


@router.get("/sellers/{seller_id}", response_model=SellerOut, tags=["directory"])
def read_seller(seller_id: int, request: Request, scope: Caller) -> SellerOut:
    _visible_seller(scope, seller_id)
    return _db(request).call(lambda s: _seller_out(s, directory.get_seller(s, seller_id)))


@router.patch("/sellers/{seller_id}", response_model=SellerOut, tags=["directory"])
def update_seller(seller_id: int, body: SellerChange, request: Request, scope: Caller) -> SellerOut:
    """Messaging on or off, addresses added or withdrawn (admin, or the seller itself)."""
    _visible_seller(scope, seller_id)

    def run(s: Session) -> SellerOut:
        seller = directory.update_seller(
            s,
            seller_id,
            messaging=body.messaging,
            add_emails=body.add_emails,
            remove_emails=body.remove_emails,
        )
        return _seller_out(s, seller)

    return _db(request).write(run)


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderOut,
    responses={200: {"model": OrderOut, "description": "The same order, sent again"}},
    tags=["directory"],
)
async def create_order(
    body: NewOrder, request: Request, response: Response, key_id: AdminWriter
) -> OrderOut:
    """Register an order: creates the buyer and the conversation as needed and
    returns its tokens.  The same order sent again (same buyer, same seller) is
    answered 200 with the same body; a different order under that id is a 409."""
    # The marketplace's busiest call: a coroutine that waits for the writer
    # thread (db.awrite) instead of a pool thread that waits for it.
    domain = _domain(request)

    def run(s: Session) -> directory.PlacedOrder:
        keys.check_unrevoked(s, key_id)  # the key's scope came from a cache
        return directory.place_order(
            s,
            body.order_id,
            buyer_email=body.buyer_email,
            buyer_name=body.buyer_name,
            seller_id=body.seller_id,
            categories=body.categories,
        )

    try:
        placed = await _db(request).awrite(run)
    except keys.Revoked:
        cache: KeyCache = request.app.state.keys
        cache.forget(key_id)
        raise Problem(Kind.UNAUTHORIZED, INVALID) from None
    if not placed.created:
        response.status_code = 200
    return OrderOut(
        order_id=placed.order_id,
        conversation_id=placed.conversation_id,
        buyer_token=f"{placed.buyer_token}@{domain}",
        seller_token=f"{placed.seller_token}@{domain}",
    )


def _opt(request: Request, email: str, value: bool) -> OptOutOut:
    buyer = _db(request).write(lambda s: directory.set_opt_out(s, email, value).email)
    return OptOutOut(email=buyer, opted_out=value)


@router.post("/buyers/opt-out", response_model=OptOutOut, tags=["directory"])
def opt_out(body: BuyerEmail, request: Request, _scope: Admin) -> OptOutOut:
    """No more unsolicited seller messages to this buyer (their senders get a notice)."""
    return _opt(request, body.email, True)


@router.post("/buyers/opt-in", response_model=OptOutOut, tags=["directory"])
def opt_in(body: BuyerEmail, request: Request, _scope: Admin) -> OptOutOut:
    return _opt(request, body.email, False)


def _conversation(s: Session, scope: Scope, conversation_id: int) -> Conversation:
    conv = s.get(Conversation, conversation_id)
    if conv is None or not scope.sees_seller(conv.seller_id):
        raise directory.NotFound(f"no conversation with id {conversation_id}")
    return conv


@router.get("/conversations/{conversation_id}", response_model=ConversationOut, tags=["directory"])
def read_conversation(conversation_id: int, request: Request, scope: Caller) -> ConversationOut:
    domain = _domain(request)

    def run(s: Session) -> ConversationOut:
        conv = _conversation(s, scope, conversation_id)
        assert conv.id is not None
        return ConversationOut(
            conversation_id=conv.id,
            seller_id=conv.seller_id,
            buyer_token=f"{conv.buyer_token}@{domain}",
            seller_token=f"{conv.seller_token}@{domain}",
            buyer_initiated=conv.buyer_initiated,
            first_message_at=conv.first_message_at,
        )

    return _db(request).call(run)


@router.post(
    "/conversations/{conversation_id}/no-response-needed",
    response_model=NoResponseNeeded,
    tags=["directory"],
)
def no_response_needed(conversation_id: int, request: Request, scope: Caller) -> NoResponseNeeded:
    """The seller's "no response needed": stops the response clock of the buyer
    messages waiting in this conversation (``relay conversation ID --no-response-needed``)."""

    def run(s: Session) -> int:
        _conversation(s, scope, conversation_id)
        return response_times.mark_no_response_needed(s, conversation_id)

    stopped = _db(request).write(run)
    return NoResponseNeeded(conversation_id=conversation_id, stopped=stopped)
