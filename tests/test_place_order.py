"""``place_order``, the one implementation of an order's rules (the API's POST
/orders, and the command line's through ``add_order``): its rows, its refusals
in the command's words, and idempotence (which ``add_order`` refuses instead)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlmodel import Session, select

from relay.core.config import DatabaseConfig
from relay.storage import directory
from relay.storage.db import Database
from relay.storage.models import Buyer, Conversation, Order


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(DatabaseConfig(url=database_url))
    database.migrate()
    database.write(lambda s: directory.add_seller(s, name="Shop", emails=["shop@seller.example"]))
    database.write(lambda s: directory.add_seller(s, name="Other", emails=["o@seller.example"]))
    yield database
    database.dispose()


def place(db: Database, order_id: str = "ORD-1", **kw: Any) -> directory.PlacedOrder:
    args: dict[str, Any] = {
        "buyer_email": "Maria@Buyer.example",
        "buyer_name": "Maria",
        "seller_id": 1,
    }
    args.update(kw)
    return db.write(directory.place_order, order_id, **args)


def test_a_new_order_makes_the_buyer_the_conversation_and_the_order(db: Database) -> None:
    placed = place(db, categories=[" Toys ", "books", "toys", ""])
    assert placed.created and placed.order_id == "ORD-1"

    def rows(s: Session) -> tuple[Buyer, Conversation, Order]:
        order = s.get(Order, "ORD-1")
        assert order is not None
        conv = s.get(Conversation, order.conversation_id)
        assert conv is not None
        buyer = s.get(Buyer, conv.buyer_id)
        assert buyer is not None
        return buyer, conv, order

    buyer, conv, order = db.call(rows)
    assert (buyer.email, buyer.name) == ("maria@buyer.example", "Maria")
    assert (conv.id, conv.seller_id) == (placed.conversation_id, 1)
    assert (conv.buyer_token, conv.seller_token) == (placed.buyer_token, placed.seller_token)
    assert order.categories == "books toys"
    assert conv.created_at is not None and order.created_at is not None


def test_the_same_order_again_is_what_the_first_made(db: Database) -> None:
    first = place(db)
    again = place(db, " ORD-1 ", buyer_email="maria@buyer.example", buyer_name=None)
    assert again == directory.PlacedOrder(
        "ORD-1", first.conversation_id, first.buyer_token, first.seller_token, created=False
    )
    for other in ({"seller_id": 2}, {"buyer_email": "jose@buyer.example"}):
        with pytest.raises(directory.Conflict, match="ORD-1 already exists, for another"):
            place(db, **other)
    assert db.call(lambda s: len(s.exec(select(Order)).all())) == 1


def test_a_second_order_shares_the_conversation_and_renames_the_buyer(db: Database) -> None:
    first = place(db)
    second = place(db, "ORD-2", buyer_name="Maria José")
    assert second.created and second.conversation_id == first.conversation_id
    assert second.buyer_token == first.buyer_token
    assert place(db, "ORD-3", buyer_name=None).conversation_id == first.conversation_id
    assert place(db, "ORD-4", seller_id=2, buyer_name="").conversation_id != first.conversation_id
    names = db.call(lambda s: [b.name for b in s.exec(select(Buyer)).all()])
    assert names == ["Maria José"]


@pytest.mark.parametrize(
    ("order_id", "kw"),
    [
        ("   ", {}),
        ("ORD-9", {"seller_id": 99}),
        ("ORD-9", {"seller_id": 99, "buyer_email": "not an address"}),
        ("ORD-9", {"buyer_email": "not an address"}),
        ("ORD-9", {"buyer_email": "shop@seller.example"}),
        ("ORD-9", {"buyer_name": "Evil\r\nBcc: x@y.example"}),
    ],
)
def test_refusals_are_add_orders(db: Database, order_id: str, kw: dict[str, Any]) -> None:
    def outcome(fn: Callable[..., Any]) -> tuple[type[Exception], str]:
        args = {"buyer_email": "maria@buyer.example", "buyer_name": "Maria", "seller_id": 1}
        args.update(kw)
        with pytest.raises(directory.DirectoryError) as refused:
            db.write(fn, order_id, **args)
        return type(refused.value), str(refused.value)

    assert outcome(directory.place_order) == outcome(directory.add_order)
    assert db.call(lambda s: s.exec(select(Buyer)).all()) == []
