"""The queue's statements, looked at directly: what a claim leases, what recording
an outcome changes, and the RCPT check's hourly counts (on both databases)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from relay.core.config import DatabaseConfig
from relay.delivery import spool
from relay.storage import directory
from relay.storage.db import Database
from relay.storage.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Direction,
    Message,
    MessageStatus,
    WebhookEvent,
    utcnow,
)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(DatabaseConfig(url=database_url, busy_timeout=2))
    database.migrate()
    yield database
    database.dispose()


def seed(db: Database, **deliveries: dict[str, object]) -> dict[str, int]:
    """One delivery per name, each of a queued message with a delivered copy;
    the values are the delivery's own fields (``next_attempt_at``...)."""

    def run(s: Session) -> dict[str, int]:
        ids = {}
        for name, fields in deliveries.items():
            msg = Message(
                direction=Direction.BUYER_TO_SELLER,
                status=MessageStatus.QUEUED,
                delivered_path=f"delivered/{name}.eml",
            )
            s.add(msg)
            s.flush()
            assert msg.id is not None
            d = Delivery(message_id=msg.id, envelope_from="", recipient=f"{name}@example.org")
            for key, value in fields.items():
                setattr(d, key, value)
            s.add(d)
            s.flush()
            assert d.id is not None
            ids[name] = d.id
        return ids

    return db.call(run)


def owners(db: Database) -> dict[int, str | None]:
    return db.call(lambda s: {d.id or 0: d.claimed_by for d in s.exec(select(Delivery))})


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "row-by-row"])
def test_a_claim_leases_the_due_rows_up_to_its_limit_in_due_order(
    db: Database, returning: bool
) -> None:
    if not returning:
        # A database without UPDATE ... RETURNING (SQLite before 3.35): each
        # candidate leased on its own.  The same rules hold on PostgreSQL.
        db.engine.dialect.update_returning = False
    now = utcnow()
    ids = seed(
        db,
        third={"next_attempt_at": now - timedelta(minutes=3)},
        first={"next_attempt_at": now - timedelta(minutes=9)},
        expired={
            "next_attempt_at": now - timedelta(minutes=5),
            "claimed_by": "gone",
            "claimed_until": now - timedelta(seconds=1),
        },
        held={
            "next_attempt_at": now - timedelta(minutes=8),
            "claimed_by": "other",
            "claimed_until": now + timedelta(minutes=1),
        },
        later={"next_attempt_at": now + timedelta(minutes=1)},
        last={"next_attempt_at": now - timedelta(minutes=1)},
        done={"next_attempt_at": now - timedelta(minutes=7), "status": DeliveryStatus.DELIVERED},
    )
    batch = db.call(spool.claim, "w1", limit=2, lease=60)
    assert [c.id for c in batch] == [ids["first"], ids["expired"]]
    rest = db.call(spool.claim, "w2", limit=10, lease=60)
    assert [c.id for c in rest] == [ids["third"], ids["last"]]
    assert db.call(spool.claim, "w3", limit=10, lease=60) == []
    by_id = owners(db)
    assert {name: by_id[i] for name, i in ids.items()} == {
        "first": "w1",
        "expired": "w1",
        "third": "w2",
        "last": "w2",
        "held": "other",
        "later": None,
        "done": None,
    }
    # A lease that ran out is claimable again.
    later = db.call(spool.claim, "w4", limit=10, lease=60, now=now + timedelta(minutes=2))
    assert {c.id for c in later} == {ids["first"], ids["expired"], ids["third"], ids["last"]} | {
        ids["held"],
        ids["later"],
    }


def test_record_delivered_is_the_leaseholder_s_and_happens_once(db: Database) -> None:
    seed(db, one={})
    [item] = db.call(spool.claim, "w1", limit=5, lease=60)
    db.call(spool.record_delivered, item, "w2", "250 not mine")  # another worker's lease
    assert db.call(lambda s: s.get(Delivery, item.id)).status is DeliveryStatus.PENDING
    db.call(spool.record_delivered, item, "w1", "250 ok")
    db.call(spool.record_delivered, item, "w1", "250 again")

    def state(s: Session) -> tuple[Delivery, Message, list[str], list[WebhookEvent]]:
        d = s.get(Delivery, item.id)
        m = s.get(Message, item.message_id)
        assert d is not None and m is not None
        attempts = s.exec(
            select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == item.id)
        ).all()
        events = s.exec(select(WebhookEvent)).all()
        return d, m, list(attempts), list(events)

    d, m, attempts, events = db.call(state)
    assert (d.status, d.attempts, d.last_reply, d.claimed_by, d.claimed_until) == (
        DeliveryStatus.DELIVERED,
        1,
        "250 ok",
        None,
        None,
    )
    assert d.finished_at is not None
    assert m.status is MessageStatus.DELIVERED
    assert attempts == ["delivered"]
    assert [(e.type, e.message_id) for e in events] == [("message.delivered", item.message_id)]
    assert json.loads(events[0].data) == {
        "message_id": item.message_id,
        "direction": "buyer_to_seller",
        "delivery_id": item.id,
    }


def test_a_delivery_of_a_message_no_longer_queued_changes_only_the_delivery(
    db: Database,
) -> None:
    seed(db, one={})
    [item] = db.call(spool.claim, "w1", limit=5, lease=60)

    def fail_message(s: Session) -> None:
        m = s.get(Message, item.message_id)
        assert m is not None
        m.status = MessageStatus.FAILED
        s.add(m)

    db.call(fail_message)
    db.call(spool.record_delivered, item, "w1", "250 ok")
    d = db.call(lambda s: s.get(Delivery, item.id))
    m = db.call(lambda s: s.get(Message, item.message_id))
    assert d is not None and m is not None
    assert d.status is DeliveryStatus.DELIVERED
    assert m.status is MessageStatus.FAILED
    assert db.call(lambda s: s.exec(select(WebhookEvent)).all()) == []


def test_the_hourly_counts_are_those_of_recent_messages(db: Database) -> None:
    now = utcnow()

    def run(s: Session) -> int:
        seller = directory.add_seller(s, name="Shop", emails=["shop@seller.example"])
        assert seller.id is not None
        conv = directory.place_order(
            s, "ORD-1", buyer_email="a@x.example", buyer_name="", seller_id=seller.id
        ).conversation_id
        rows = [
            ("a@x.example", Direction.BUYER_TO_SELLER, 5, conv),
            ("a@x.example", Direction.BUYER_TO_SELLER, 10, conv),
            ("a@x.example", Direction.BUYER_TO_SELLER, 90, conv),
            ("a@x.example", Direction.SELLER_TO_BUYER, 1, conv),
            ("a@x.example", Direction.NOTICE, 1, conv),
            ("a@x.example", Direction.BUYER_TO_SELLER, 2, None),
            ("b@x.example", Direction.BUYER_TO_SELLER, 1, conv),
        ]
        for sender, direction, minutes, conversation in rows:
            s.add(
                Message(
                    conversation_id=conversation,
                    direction=direction,
                    status=MessageStatus.DELIVERED,
                    envelope_from=sender,
                    created_at=now - timedelta(minutes=minutes),
                )
            )
        return conv

    conv = db.call(run)
    since = now - timedelta(hours=1)

    def compare(s: Session) -> set[tuple[int, int]]:
        seen = set()
        for sender in ("a@x.example", "b@x.example", "c@x.example"):
            for conversation in (conv, conv + 1):
                for direction in (Direction.BUYER_TO_SELLER, Direction.SELLER_TO_BUYER):
                    for up_to in (1, 2, 100):
                        counted = directory.recent_counts(
                            s,
                            since=since,
                            envelope_from=sender,
                            sender_up_to=up_to,
                            conversation_id=conversation,
                            direction=direction,
                            conversation_up_to=up_to + 1,
                        )
                        expected = (
                            directory.recent_messages(
                                s, since=since, envelope_from=sender, up_to=up_to
                            ),
                            directory.recent_messages(
                                s,
                                since=since,
                                conversation_id=conversation,
                                direction=direction,
                                up_to=up_to + 1,
                            ),
                        )
                        assert counted == expected, (sender, conversation, direction, up_to)
                        seen.add(counted)
        return seen

    seen = db.call(compare)
    assert {(4, 3), (2, 3), (1, 2), (1, 3), (0, 0)} <= seen
