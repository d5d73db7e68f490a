"""How fast does the campaign dispatcher queue a campaign, and does it stall the
event loop that serves SMTP while it does?

Creates a brand with FOLLOWERS followers and an approved campaign in a fresh
database, starts it (planning one message per follower), then runs the pass
that finds every message due at once (the end of the window: the worst case; a
real campaign is spread over 5 days).  That pass renders each message from the
templates, runs the leak check, archives it and queues it.  Meanwhile a task on
the same event loop wakes every millisecond and records how late it woke: what
an SMTP session would have waited.  Prints, per run: messages queued per second,
CPU ms per message, the loop's longest stall and 99th-percentile lateness, and
the same lateness with the loop idle, for comparison.

    .venv/bin/python bench/campaigns.py [--followers 5000] [--runs 3] [--database postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fresh import fresh_database  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from relay import campaigns  # noqa: E402
from relay.campaigns import catalog, lifecycle  # noqa: E402
from relay.campaigns.dispatch import Dispatcher  # noqa: E402
from relay.campaigns.models import CampaignKind, Follower, SendStatus  # noqa: E402
from relay.campaigns.render import Renderer  # noqa: E402
from relay.core.config import ArchiveConfig, DatabaseConfig, RelayConfig  # noqa: E402
from relay.storage.archive import Archive  # noqa: E402
from relay.storage.db import Database  # noqa: E402
from relay.storage.models import Buyer  # noqa: E402

CREATED = datetime(2030, 1, 1, tzinfo=UTC)
START = date(2030, 1, 10)


def populate(session: Session, followers: int) -> int:
    """A brand, its followers (inserted in bulk) and an approved campaign; its id."""
    brand = catalog.add_brand(session, name="Bench Brand", registered=True, store_page=True)
    assert brand.id is not None
    session.execute(
        insert(Buyer),
        [{"email": f"c{i}@buyers.example", "name": f"Customer {i}"} for i in range(followers)],
    )
    buyer_ids = session.exec(select(Buyer.id)).all()
    session.execute(
        insert(Follower),
        [{"brand_id": brand.id, "buyer_id": b, "followed_since": CREATED} for b in buyer_ids],
    )
    main = catalog.add_product(
        session, brand.id, sku="B-1", title="Lacquer box", price="250,000 VND", description="x"
    )
    extra = catalog.add_product(
        session, brand.id, sku="B-2", title="Scarf", price="", description=""
    )
    assert main.id is not None and extra.id is not None
    draft = lifecycle.Draft(
        kind=CampaignKind.SPOTLIGHT,
        main_product_id=main.id,
        extra_product_ids=[extra.id],
        subject="New in the store",
        content="Hand made boxes.\n\nAnd scarves.",
        start_on=START,
    )
    campaign = lifecycle.create(session, brand.id, draft, now=CREATED)
    assert campaign.id is not None
    lifecycle.submit(session, campaign.id, now=CREATED)
    lifecycle.review(session, campaign.id, approve=True, now=CREATED)
    return campaign.id


class LoopLag:
    """Wakes every millisecond and records how late."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._stop = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop:
            planned = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.late.append(max(0.0, loop.time() - planned))

    def stop(self) -> None:
        self._stop = True

    def summary(self) -> tuple[float, float]:
        ordered = sorted(self.late) or [0.0]
        return ordered[-1] * 1000, ordered[int(0.99 * (len(ordered) - 1))] * 1000


async def one_run(url: str, workdir: Path, followers: int) -> dict[str, Any]:
    config = RelayConfig(
        database=DatabaseConfig(url=url), archive=ArchiveConfig(path=workdir / "archive")
    )
    campaigns.install()  # the campaign tables, for the migration
    db = Database(config.database)
    db.migrate()
    db.write(populate, followers)
    dispatcher = Dispatcher(config, db, Archive(config.archive.path), renderer=Renderer(config))
    start = datetime.combine(START, datetime.min.time(), UTC)
    await dispatcher.pass_once(start)  # take up and plan

    idle = LoopLag()
    idle_task = asyncio.create_task(idle.run())
    await asyncio.sleep(1.0)
    idle.stop()
    await idle_task

    lag = LoopLag()
    lag_task = asyncio.create_task(lag.run())
    wall, cpu = time.perf_counter(), time.process_time()
    report = await dispatcher.pass_once(start + timedelta(days=5))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    lag.stop()
    await lag_task
    db.dispose()
    sent = report.outcomes.get(SendStatus.SENT, 0)
    assert sent == followers, report.as_json()
    stall, p99 = lag.summary()
    idle_stall, idle_p99 = idle.summary()
    return {
        "per_second": sent / wall,
        "cpu_ms": cpu * 1000 / sent,
        "stall_ms": stall,
        "p99_ms": p99,
        "idle_stall_ms": idle_stall,
        "idle_p99_ms": idle_p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        with (
            tempfile.TemporaryDirectory(prefix="relay-bench-campaigns-") as tmp,
            fresh_database(args.database, Path(tmp), f"relay_bench_campaigns_{run}") as url,
        ):
            result = asyncio.run(one_run(url, Path(tmp), args.followers))
        results.append(result)
        print(
            f"run {run + 1}: {result['per_second']:.0f} messages/s queued,"
            f" {result['cpu_ms']:.2f} ms CPU each; loop stall max {result['stall_ms']:.1f} ms,"
            f" p99 {result['p99_ms']:.2f} ms (idle: max {result['idle_stall_ms']:.1f},"
            f" p99 {result['idle_p99_ms']:.2f})"
        )
    print(f"median of {args.runs} ({args.database}, {args.followers} followers):")
    for key in ("per_second", "cpu_ms", "stall_ms", "p99_ms", "idle_stall_ms", "idle_p99_ms"):
        print(f"  {key}: {statistics.median(r[key] for r in results):.2f}")


if __name__ == "__main__":
    main()
