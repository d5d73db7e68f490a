"""What only PostgreSQL has: row locks, and claims that skip the rows others hold.

The main suites run on PostgreSQL as well (``database_url`` in conftest.py); these
tests look at the queue's claims directly, each in a throwaway database of its
own, and are skipped (with the reason) only when no server answers on
127.0.0.1:5432.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from relay.core.config import DatabaseConfig
from relay.delivery import spool
from relay.storage.db import Database
from relay.storage.models import Delivery, Direction, Message, MessageStatus


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(DatabaseConfig(url=pg_url, busy_timeout=2))
    database.migrate()
    yield database
    database.dispose()


def seed(db: Database, count: int) -> list[int]:
    """``count`` due deliveries, each of a message with an archived delivered copy."""

    def run(s: Session) -> list[int]:
        ids = []
        for i in range(count):
            msg = Message(
                direction=Direction.BUYER_TO_SELLER,
                status=MessageStatus.QUEUED,
                delivered_path=f"delivered/{i}.eml",
            )
            s.add(msg)
            s.flush()
            assert msg.id is not None
            delivery = Delivery(message_id=msg.id, envelope_from="", recipient=f"r{i}@example.org")
            s.add(delivery)
            s.flush()
            assert delivery.id is not None
            ids.append(delivery.id)
        return ids

    return db.call(run)


def test_a_claim_skips_the_rows_another_claim_holds(db: Database) -> None:
    ids = seed(db, 6)
    with Session(db.engine) as first:
        held = spool.claim(first, "worker-a", limit=2, lease=60)  # not committed yet
        started = time.monotonic()
        others = db.call(spool.claim, "worker-b", limit=10, lease=60)
        # Not made to wait for the first transaction's locks (lock_timeout is 2 s).
        assert time.monotonic() - started < 1
        first.commit()
    assert len(held) == 2 and len(others) == 4
    assert sorted(c.id for c in held + others) == ids
    assert db.call(spool.claim, "worker-c", limit=10, lease=60) == []

    def owners(s: Session) -> dict[int, str | None]:
        return {d.id or 0: d.claimed_by for d in s.exec(select(Delivery))}

    by_owner = Counter(db.call(owners).values())
    assert by_owner == {"worker-a": 2, "worker-b": 4}


def test_concurrent_claims_never_share_a_row(db: Database) -> None:
    ids = seed(db, 120)
    got: dict[str, list[int]] = {}

    def worker(name: str) -> None:
        mine: list[int] = []
        while batch := db.call(spool.claim, name, limit=3, lease=60):
            mine.extend(c.id for c in batch)
        got[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    claimed = [i for mine in got.values() for i in mine]
    assert sorted(claimed) == ids, "every row claimed exactly once"
