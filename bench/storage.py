"""The database work of one message, per operation, without SMTP or the filters.

    .venv/bin/python bench/storage.py [--runs 5] [--messages 480] [--pairs 20]
        [--batch 16] [--database sqlite|postgresql] [--json FILE]

Per run: a fresh database (SQLite in a temporary directory, or a new PostgreSQL
database on 127.0.0.1), ``--pairs`` sellers (two approved addresses each), buyers
and conversations registered with the directory's own functions, one message in
each direction of every conversation already recorded (the steady state: the
conversations have traffic).  Then, in this order, each operation timed on its
own, with the relay's own functions:

- ``rcpt``: ``check_recipient`` for one RCPT TO (the route and the two hourly
  counts), in a session of its own, as ``Database.run`` calls it; ``--messages``
  of them, buyer to seller and seller to buyer in turn;
- ``record``: the write job of one message delivered to one recipient (its
  message row, delivery, threading row), with the routes the RCPT checks found;
- ``claim``: a claim of a batch of 10 due deliveries (the rows ``record`` queued);
- ``delivered``: ``record_delivered`` of one claimed delivery (and the
  ``message.delivered`` event of its message).

The write jobs run in the relay's group-commit writer (``GroupCommit``), whose
batches are run in this thread: each job in a savepoint of a shared
transaction, ``--batch`` jobs per commit, on a writer engine (``BEGIN
IMMEDIATE`` on SQLite).  Reported per operation: wall time and
CPU time of this process's one thread (the database client's work, SQLite's
included; a PostgreSQL server's is not), in microseconds, the median of the
runs.  The relay's source is imported from the checkout this file is in, so a
copy of it run in an older checkout measures that revision (before/after).
"""

from __future__ import annotations

import argparse
import inspect
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from email.message import EmailMessage
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from fresh import fresh_database  # noqa: E402
from sqlmodel import Session  # noqa: E402

from relay import campaigns  # noqa: E402
from relay.core.config import (  # noqa: E402
    ArchiveConfig,
    DatabaseConfig,
    LimitsConfig,
    MarketplaceConfig,
    RelayConfig,
)
from relay.delivery import spool  # noqa: E402
from relay.filters import Verdict  # noqa: E402
from relay.inbound.envelope import check_recipient  # noqa: E402
from relay.message.parse import ParsedMail  # noqa: E402
from relay.message.threading_ids import new_message_id  # noqa: E402
from relay.pipeline import record  # noqa: E402
from relay.pipeline.verdicts import Deliver, Plan  # noqa: E402
from relay.storage import directory  # noqa: E402
from relay.storage.archive import Archive  # noqa: E402
from relay.storage.db import Database, GroupCommit, _Job, make_engine  # noqa: E402

DOMAIN = "marketplace.example.com"
OPS = ("rcpt", "record", "claim", "delivered")
CLAIM_BATCH = 10


class Clock:
    """Wall and thread CPU time of the operations measured, and their count."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.count = 0

    def measure(self, fn: Callable[[], Any], count: int = 1) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        result = fn()
        self.cpu += time.thread_time() - cpu
        self.wall += time.perf_counter() - wall
        self.count += count
        return result

    def per_op_us(self) -> tuple[float, float]:
        n = max(1, self.count)
        return self.wall / n * 1e6, self.cpu / n * 1e6


class Writer:
    """The relay's group-commit writer (``GroupCommit``), its batches run in this
    thread: each job in a savepoint of a shared transaction, one commit."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.group = GroupCommit(make_engine(config, writer=True))

    def run_batch(self, jobs: list[Callable[[Session], Any]]) -> list[Any]:
        batch = [_Job(job, (), {}, Future()) for job in jobs]
        self.group._commit_batch(batch)
        return [job.future.result() for job in batch]

    def close(self) -> None:
        self.group.close()


def make_config(url: str, workdir: Path) -> RelayConfig:
    return RelayConfig(
        marketplace=MarketplaceConfig(domain=DOMAIN),
        database=DatabaseConfig(url=url),
        archive=ArchiveConfig(path=workdir / "archive"),
        limits=LimitsConfig(messages_per_sender=10**9, messages_per_conversation=10**9),
    )


def register(db: Database, pairs: int) -> list[tuple[str, str, str, str]]:
    """(buyer address, seller address, buyer token, seller token) of each conversation."""

    def run(session: Session) -> list[tuple[str, str, str, str]]:
        found = []
        for i in range(pairs):
            seller_email = f"shop{i:02d}@seller.example"
            seller = directory.add_seller(
                session,
                name=f"Bench Seller {i}",
                emails=[seller_email, f"orders{i:02d}@seller.example"],
            )
            assert seller.id is not None
            buyer_email = f"buyer{i:02d}@buyer.example"
            placed = directory.place_order(
                session,
                f"ORD-{i}",
                buyer_email=buyer_email,
                buyer_name=f"Buyer {i}",
                seller_id=seller.id,
            )
            found.append(
                (
                    buyer_email,
                    seller_email,
                    f"{placed.buyer_token}@{DOMAIN}",
                    f"{placed.seller_token}@{DOMAIN}",
                )
            )
        return found

    return db.call(run)


def parsed_mail(i: int) -> ParsedMail:
    return ParsedMail(
        message=EmailMessage(),
        subject=f"About order {i}",
        message_id=f"<m{i}.{secrets.token_hex(4)}@sender.example>",
        in_reply_to=(),
        references=(),
        auto_submitted=False,
        source=b"",
    )


def record_job(
    config: RelayConfig, archive: Archive, envelope_from: str, route: directory.Route, i: int
) -> Callable[[Session], Any]:
    plan = Plan(
        route,
        Verdict(),
        Deliver(
            relay_id=new_message_id(DOMAIN),
            original_id=f"<m{i}@sender.example>",
            delivered_path=f"delivered/2024/01/01/{i:06d}.eml",
        ),
    )
    parsed = parsed_mail(i)

    def job(session: Session) -> Any:
        return record.record(
            session,
            config=config,
            archive=archive,
            envelope_from=envelope_from,
            received_path=f"received/2024/01/01/{i:06d}.eml",
            parsed=parsed,
            bounces=[],
            plans=[plan],
            trace_id=f"t{i:08x}",
        )

    return job


def delivered_job(item: spool.Claimed, worker: str) -> Callable[[Session], Any]:
    """``record_delivered`` as the outbound worker calls it (by the claimed item,
    or by its id where the relay's signature is that)."""
    first = list(inspect.signature(spool.record_delivered).parameters)[1]
    target: Any = item if first == "item" else item.id

    def job(session: Session) -> Any:
        return spool.record_delivered(session, target, worker, "250 2.0.0 Ok: queued")

    return job


def one_run(kind: str, messages: int, pairs: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relay-bench-storage-") as tmp:
        workdir = Path(tmp)
        name = f"relay_bench_storage_{secrets.token_hex(4)}"
        with fresh_database(kind, workdir, name) as url:
            config = make_config(url, workdir)
            db = Database(config.database)
            db.migrate()
            writer = Writer(config.database)
            archive = Archive(config.archive.path)
            try:
                return measure(db, writer, config, archive, messages, pairs, batch)
            finally:
                writer.close()
                db.dispose()


def measure(
    db: Database,
    writer: Writer,
    config: RelayConfig,
    archive: Archive,
    messages: int,
    pairs: int,
    batch: int,
) -> dict[str, Any]:
    parties = register(db, pairs)
    senders = []  # (envelope from, recipient token address), both directions
    for buyer, seller, buyer_token, seller_token in parties:
        senders.append((buyer, seller_token))
        senders.append((seller, buyer_token))
    worker = spool.worker_id()

    def rcpt(k: int) -> tuple[str, directory.Route]:
        sender, token = senders[k % len(senders)]
        route = db.call(check_recipient, sender, token, config=config)
        assert route is not None
        return sender, route

    def drain(expected: int, clock: Clock | None = None, claim_clock: Clock | None = None) -> None:
        """Claim the ``expected`` due deliveries, 10 a claim, and record them delivered."""
        claimed: list[spool.Claimed] = []
        claims = -(-expected // CLAIM_BATCH)
        for start in range(0, claims, batch):
            jobs = [
                lambda s: spool.claim(s, worker, limit=CLAIM_BATCH, lease=300, domain=DOMAIN)
            ] * min(batch, claims - start)
            if claim_clock is None:
                results = writer.run_batch(jobs)
            else:
                results = claim_clock.measure(lambda j=jobs: writer.run_batch(j), len(jobs))
            claimed += [item for r in results for item in r]
        assert len(claimed) == expected, (len(claimed), expected)
        assert writer.run_batch([jobs[0]]) == [[]]
        for start in range(0, len(claimed), batch):
            jobs = [delivered_job(item, worker) for item in claimed[start : start + batch]]
            if clock is None:
                writer.run_batch(jobs)
            else:
                clock.measure(lambda j=jobs: writer.run_batch(j), len(jobs))

    # The steady state: every conversation has traffic both ways; every
    # statement the operations use has been compiled once.
    warm = [rcpt(k) for k in range(len(senders))]
    writer.run_batch([record_job(config, archive, s, r, -k - 1) for k, (s, r) in enumerate(warm)])
    drain(len(warm))

    clocks = {op: Clock() for op in OPS}
    routes = [clocks["rcpt"].measure(lambda k=k: rcpt(k)) for k in range(messages)]
    for start in range(0, messages, batch):
        jobs = [
            record_job(config, archive, sender, route, start + k)
            for k, (sender, route) in enumerate(routes[start : start + batch])
        ]
        clocks["record"].measure(lambda j=jobs: writer.run_batch(j), len(jobs))
    drain(messages, clocks["delivered"], clocks["claim"])
    out: dict[str, Any] = {}
    for op, clock in clocks.items():
        wall, cpu = clock.per_op_us()
        out[op] = {"wall_us": round(wall, 1), "cpu_us": round(cpu, 1), "count": clock.count}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=480)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="jobs per commit")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--json", type=Path, help="write the runs and medians here")
    args = parser.parse_args()
    campaigns.install()
    runs = []
    for index in range(args.runs):
        result = one_run(args.database, args.messages, args.pairs, args.batch)
        runs.append(result)
        line = "  ".join(
            f"{op} {result[op]['wall_us']:.0f}/{result[op]['cpu_us']:.0f}" for op in OPS
        )
        print(f"run {index + 1}: {line}  (µs wall/CPU per operation)", flush=True)
    medians = {
        op: {
            "wall_us": round(statistics.median(r[op]["wall_us"] for r in runs), 1),
            "cpu_us": round(statistics.median(r[op]["cpu_us"] for r in runs), 1),
        }
        for op in OPS
    }
    print(
        f"\n{args.database}, {args.messages} messages, {args.pairs} conversations,"
        f" {args.batch} jobs per commit; median of {args.runs} runs\n"
    )
    print("| operation | µs per operation (wall) | CPU µs per operation |")
    print("| --- | --- | --- |")
    labels = {
        "rcpt": "RCPT check",
        "record": "record (one delivered message)",
        "claim": f"claim of {CLAIM_BATCH}",
        "delivered": "record_delivered",
    }
    for op in OPS:
        print(f"| {labels[op]} | {medians[op]['wall_us']:.0f} | {medians[op]['cpu_us']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": medians}, indent=2) + "\n")


if __name__ == "__main__":
    main()
