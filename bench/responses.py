"""How long does ``relay responses`` take on a large archive?

Fills a fresh database with a marketplace's worth of conversations (sellers,
buyers, conversations, and per conversation a timeline of buyer messages and
seller replies spread over 60 days, some blocked, some marked "no response
needed"), then times ``response_stats`` for all sellers and for one seller.
The rows are inserted in bulk, not through SMTP: this measures the query, not
the relay.  SQLite always; PostgreSQL too when a server answers on
127.0.0.1:5432 (a database of its own, dropped afterwards).

    .venv/bin/python bench/responses.py [--messages 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from relay.core.config import DatabaseConfig  # noqa: E402
from relay.ops.response_times import response_stats  # noqa: E402
from relay.storage import models  # noqa: E402
from relay.storage.db import Database  # noqa: E402
from relay.storage.models import Direction, MessageStatus  # noqa: E402

SELLERS = 200
PER_CONVERSATION = 8


def fill(db: Database, messages: int, now: datetime) -> int:
    """Insert about ``messages`` messages; returns how many."""
    rng = random.Random(7)
    conversations = max(1, messages // PER_CONVERSATION)
    with db.engine.begin() as conn:
        conn.execute(
            insert(models.Seller),
            [{"id": i, "name": f"Seller {i}", "created_at": now} for i in range(1, SELLERS + 1)],
        )
        conn.execute(
            insert(models.Buyer),
            [
                {"id": i, "email": f"b{i}@buyer.example", "created_at": now}
                for i in range(1, conversations + 1)
            ],
        )
        conn.execute(
            insert(models.Conversation),
            [
                {
                    "id": i,
                    "buyer_id": i,
                    "seller_id": 1 + i % SELLERS,
                    "buyer_token": f"b{i:015d}",
                    "seller_token": f"s{i:015d}",
                    "created_at": now,
                }
                for i in range(1, conversations + 1)
            ],
        )
        rows: list[dict[str, Any]] = []
        marks: list[dict[str, Any]] = []
        for conv in range(1, conversations + 1):
            at = now - timedelta(days=60) + timedelta(minutes=rng.randrange(60 * 24 * 55))
            for _ in range(PER_CONVERSATION):
                at += timedelta(minutes=rng.randrange(1, 60 * 40))
                buyer = rng.random() < 0.55
                status = MessageStatus.DELIVERED
                if rng.random() < 0.05:
                    status = MessageStatus.REJECTED
                rows.append(
                    {
                        "conversation_id": conv,
                        "direction": Direction.BUYER_TO_SELLER
                        if buyer
                        else Direction.SELLER_TO_BUYER,
                        "status": status,
                        "auto_submitted": False,
                        "created_at": min(at, now),
                        "updated_at": now,
                    }
                )
            if rng.random() < 0.03:
                marks.append({"conversation_id": conv, "at": min(at, now)})
            if len(rows) >= 20_000:
                conn.execute(insert(models.Message), rows)
                rows = []
        if rows:
            conn.execute(insert(models.Message), rows)
        if marks:
            conn.execute(insert(models.ResponseMark), marks)
    return conversations * PER_CONVERSATION


def timed(db: Database, runs: int, now: datetime, seller_id: int | None) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with Session(db.engine) as session:
            result = response_stats(session, now=now, seller_id=seller_id)
        times.append(time.perf_counter() - start)
        assert result
    return statistics.median(times)


def measure(url: str, messages: int, runs: int) -> None:
    db = Database(DatabaseConfig(url=url))
    db.migrate()
    now = datetime.now(UTC)
    start = time.perf_counter()
    count = fill(db, messages, now)
    with db.engine.begin() as conn:  # fresh statistics for the planner
        conn.execute(text("ANALYZE"))
    filled = time.perf_counter() - start
    every = timed(db, runs, now, None)
    one = timed(db, runs, now, 1)
    name = db.engine.dialect.name
    print(
        f"{name:10}  {count:>8,} messages ({filled:.0f} s to fill)"
        f"  all {SELLERS} sellers: {every * 1000:8.1f} ms"
        f"  one seller: {one * 1000:7.1f} ms   (median of {runs})"
    )
    db.dispose()


def postgres_url() -> str | None:
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        print(f"postgresql: skipped, no server on 127.0.0.1:5432 ({type(exc).__name__})")
        return None
    finally:
        admin.dispose()
    return "postgresql+psycopg://postgres@127.0.0.1:5432/relay_bench_responses"


def with_postgres(messages: int, runs: int) -> None:
    url = postgres_url()
    if url is None:
        return
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS relay_bench_responses"))
        conn.execute(text("CREATE DATABASE relay_bench_responses"))
    try:
        measure(url, messages, runs)
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS relay_bench_responses"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.messages < PER_CONVERSATION or args.runs < 1:
        parser.error(f"--messages must be at least {PER_CONVERSATION} and --runs at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        measure(f"sqlite:///{tmp}/responses.db", args.messages, args.runs)
    with_postgres(args.messages, args.runs)


if __name__ == "__main__":
    main()
