"""Archive retention (relay/retention.py): ``relay archive purge`` and the running
relay's daily purge, on real traffic.

Messages are sent over SMTP to a relay started in the test and end up in every
state the archive knows (delivered, rejected by a rule with its notice, blocked
by an opt-out with its notice, quarantined, undelivered); then the relay's clock
(``relay.core.clock.advance``) moves past ``archive.retention_days`` and the purge
runs.  The ``relay`` command runs in its own process with its own clock, so for
it the rows are made old in the database instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from relay.app import Relay
from relay.core import clock
from relay.core.config import ArchiveConfig, RelayConfig, RetryConfig
from relay.ops import retention
from relay.storage import directory
from relay.storage.db import Database
from relay.storage.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Direction,
    Message,
    MessageIdMap,
    MessageStatus,
    RuleHit,
)
from tests.helpers import (
    DOMAIN,
    Parties,
    Sink,
    build,
    buyer_writes,
    config_file,
    register,
    relay_cli,
    send,
    wait_until,
)

DAYS = 30
PAST_RETENTION = timedelta(days=DAYS + 1)

RULES = """\
rules:
  - id: no-referrals
    description: Referral programmes
    match: {keywords: [referral code]}
    action: reject
    notice: Messages to buyers may not promote referral programmes.
  - id: bulk-mailer
    description: Sent with a bulk-mail tool
    match: {header: [{name: X-Mailer, pattern: 'Bulk'}]}
    action: quarantine
"""


@pytest.fixture
def config(config: RelayConfig) -> RelayConfig:
    """Thirty days of retention, and retries that never give up, even across the
    tests' 31-day clock jumps: an undelivered message must stay undelivered."""
    delivery = config.delivery.model_copy(
        update={"retry": RetryConfig(initial_delay=0.2, max_delay=1, give_up_after=10**8)}
    )
    archive = ArchiveConfig(path=config.archive.path, retention_days=DAYS)
    return config.model_copy(update={"archive": archive, "delivery": delivery})


# --- looking at the database and the archive -------------------------------------------


@dataclass(frozen=True)
class Row:
    id: int
    subject: str
    direction: Direction
    status: MessageStatus
    about: int | None
    received: str | None
    delivered: str | None

    @property
    def paths(self) -> set[str]:
        return {p for p in (self.received, self.delivered) if p}


def rows(db: Database) -> dict[str, Row]:
    """Every message row by subject (the tests' subjects are unique; two rows of one
    mail to two recipients get ``#1``, ``#2``)."""

    def run(s: Session) -> dict[str, Row]:
        found: dict[str, Row] = {}
        for m in s.exec(select(Message).order_by(col(Message.id))).all():
            assert m.id is not None
            key = m.subject
            if key in found:
                found[f"{key} #1"] = found.pop(key)
                key = f"{key} #2"
            found[key] = Row(
                m.id,
                m.subject,
                m.direction,
                m.status,
                m.about_message_id,
                m.received_path,
                m.delivered_path,
            )
        return found

    return db.call(run)


def statuses(db: Database) -> dict[str, MessageStatus]:
    return {k: r.status for k, r in rows(db).items()}


@dataclass(frozen=True)
class Counts:
    messages: int
    rule_hits: int
    deliveries: int
    attempts: int
    thread_ids: int


def counts(db: Database) -> Counts:
    def run(s: Session) -> Counts:
        return Counts(
            *(
                len(s.exec(select(table)).all())  # type: ignore[call-overload]
                for table in (Message, RuleHit, Delivery, DeliveryAttempt, MessageIdMap)
            )
        )

    return db.call(run)


def children(db: Database) -> tuple[set[int], set[int], set[int]]:
    """The message ids that rule hits and deliveries refer to, and the delivery ids
    that attempts refer to."""

    def run(s: Session) -> tuple[set[int], set[int], set[int]]:
        hits = set(s.exec(select(RuleHit.message_id)).all())
        deliveries = set(s.exec(select(Delivery.message_id)).all())
        attempts = set(s.exec(select(DeliveryAttempt.delivery_id)).all())
        return hits, deliveries, attempts

    return db.call(run)


def delivery_ids(db: Database) -> set[int]:
    return {i for i in db.call(lambda s: s.exec(select(Delivery.id)).all()) if i is not None}


def files(archive_root: Path) -> set[str]:
    """Every stored copy, as archive-relative paths."""
    return {
        p.relative_to(archive_root).as_posix() for p in archive_root.rglob("*.eml") if p.is_file()
    }


def with_rules(relay: Relay, config: RelayConfig) -> None:
    config.filters.rules.write_text(RULES, encoding="utf-8")
    assert relay.reload_rules()


def another_order(
    relay: Relay, parties: Parties, *, buyer: str, order_id: str, seller_id: int | None = None
) -> Parties:
    """A second conversation: ``buyer`` with the seller of ``parties`` (or ``seller_id``)."""
    seller_id = seller_id or parties.seller_id

    def run(s: Session) -> Parties:
        _order, conv = directory.add_order(
            s, order_id, buyer_email=buyer, buyer_name="Jose Cruz", seller_id=seller_id
        )
        assert conv.id is not None
        seller = directory.seller_addresses(s, seller_id)[0].email
        return Parties(
            seller_id,
            conv.id,
            buyer,
            seller,
            f"{conv.buyer_token}@{DOMAIN}",
            f"{conv.seller_token}@{DOMAIN}",
        )

    return relay.db.call(run)


async def seller_sends(
    relay: Relay, parties: Parties, subject: str, text: str, *, sender: str | None = None, **h: str
) -> None:
    sender = sender or parties.seller
    msg = build(frm=sender, to=parties.buyer_token, subject=subject, body=text, headers=h)
    await send(relay, msg, sender=sender, recipients=[parties.buyer_token])


# --- the purge, message by message ------------------------------------------------------


async def test_purge_keeps_what_must_stay_and_removes_the_rest(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    db, root = relay.db, config.archive.path
    with_rules(relay, config)
    second_shop = register(
        relay, buyer=parties.buyer, seller=("other@seller2.example",), order_id="ORD-2"
    )
    jose = another_order(relay, parties, buyer="jose@buyer.example", order_id="ORD-3")
    relay.db.call(lambda s: directory.set_opt_out(s, jose.buyer, True))
    relay.db.call(
        lambda s: directory.update_seller(s, parties.seller_id, add_emails=["sales@seller.example"])
    )
    # Nothing reaches the second shop, nor the notices to the seller's sales address.
    sink.handler.refuse["other@seller2.example"] = "451 4.3.0 try again later"
    sink.handler.refuse["sales@seller.example"] = "451 4.3.0 try again later"

    await buyer_writes(relay, parties, subject="Delivered")
    await seller_sends(relay, parties, "Referral", "Use my referral code ABC.")
    await seller_sends(relay, jose, "New arrivals", "Look at our new arrivals!")
    await seller_sends(relay, parties, "Bulk", "Hello all.", **{"X-Mailer": "BulkMailer 3.0"})
    both = build(frm=parties.buyer, to=parties.seller_token, subject="To both shops")
    await send(
        relay,
        both,
        sender=parties.buyer,
        recipients=[parties.seller_token, second_shop.seller_token],
    )
    await seller_sends(
        relay, parties, "Sales referral", "A referral code for you.", sender="sales@seller.example"
    )
    settled = {
        "Delivered": MessageStatus.DELIVERED,
        "Referral": MessageStatus.REJECTED,
        "Undelivered message: Referral": MessageStatus.DELIVERED,
        "New arrivals": MessageStatus.BLOCKED,
        "Undelivered message: New arrivals": MessageStatus.DELIVERED,
        "Bulk": MessageStatus.QUARANTINED,
        "To both shops #1": MessageStatus.DELIVERED,
        "To both shops #2": MessageStatus.QUEUED,
        "Sales referral": MessageStatus.REJECTED,
        "Undelivered message: Sales referral": MessageStatus.QUEUED,
    }
    await wait_until(lambda: statuses(db) == settled, timeout=20)
    await wait_until(
        lambda: all(n["attempts"] for n in _pending_deliveries(db)) and len(sink.messages) == 4
    )

    clock.advance(PAST_RETENTION)
    await buyer_writes(relay, parties, subject="Recent")
    await wait_until(lambda: statuses(db).get("Recent") is MessageStatus.DELIVERED)

    before = rows(db)
    before_counts = counts(db)
    before_files = files(root)
    assert before_files == set().union(*(r.paths for r in before.values()))
    shared = before["To both shops #1"].received
    assert shared is not None and shared == before["To both shops #2"].received

    gone = [
        "Delivered",
        "Referral",
        "Undelivered message: Referral",
        "New arrivals",
        "Undelivered message: New arrivals",
        "To both shops #1",
    ]
    gone_files = set().union(*(before[k].paths for k in gone)) - {shared}
    assert len(gone_files) == 7

    # A dry run counts and deletes nothing.
    dry = await asyncio.to_thread(retention.purge, db, relay.archive, DAYS, dry_run=True)
    assert (dry.dry_run, dry.messages, dry.copies, dry.thread_ids) == (True, 6, 7, 3)
    assert (dry.kept_quarantined, dry.kept_undelivered, dry.kept_other) == (1, 2, 1)
    assert dry.describe().startswith(f"would purge 6 messages older than {DAYS} days (")
    assert rows(db) == before and counts(db) == before_counts and files(root) == before_files

    report = await asyncio.to_thread(retention.purge, db, relay.archive, DAYS)
    assert (report.dry_run, report.messages, report.copies, report.thread_ids) == (False, 6, 7, 3)
    assert (report.kept_quarantined, report.kept_undelivered, report.kept_other) == (1, 2, 1)
    assert report.copies_not_removed == 0 and not report.stopped
    assert re.fullmatch(
        rf"purged 6 messages older than {DAYS} days \(\d{{4}}-\d\d-\d\d \d\d:\d\d UTC\),"
        " removed 7 stored copies and 3 Message-ID mappings; kept 1 quarantined and"
        r" 2 undelivered \(1 more kept for their notices or in use\)",
        report.describe(),
    ), report.describe()

    after = rows(db)
    assert set(after) == {
        "Bulk",  # quarantined: waits for an admin, however old
        "To both shops",  # the second shop's row: not delivered yet
        "Sales referral",  # final, but its notice is not delivered yet
        "Undelivered message: Sales referral",
        "Recent",
    }
    assert after["To both shops"] == before["To both shops #2"]
    assert after["Sales referral"] == before["Sales referral"]
    left = {r.id for r in after.values()}
    hits, delivered_of, attempted = children(db)
    assert hits == {after["Bulk"].id, after["Sales referral"].id}
    assert delivered_of <= left and attempted <= delivery_ids(db)
    assert counts(db).thread_ids == 1  # the recent message's
    assert files(root) == before_files - gone_files
    assert shared in files(root)  # the second shop's row still refers to it

    # Purging again finds nothing more.
    again = await asyncio.to_thread(retention.purge, db, relay.archive, DAYS)
    assert (again.messages, again.copies, again.thread_ids) == (0, 0, 0)

    # Once the last two are delivered, they go too, and the shared copy with them.
    sink.handler.refuse.clear()
    await wait_until(
        lambda: (
            statuses(db)
            == {
                "Bulk": MessageStatus.QUARANTINED,
                "To both shops": MessageStatus.DELIVERED,
                "Sales referral": MessageStatus.REJECTED,
                "Undelivered message: Sales referral": MessageStatus.DELIVERED,
                "Recent": MessageStatus.DELIVERED,
            }
        ),
        timeout=15,
    )
    last = await asyncio.to_thread(retention.purge, db, relay.archive, DAYS)
    assert (last.messages, last.copies, last.kept_quarantined, last.kept_other) == (3, 4, 1, 0)
    assert set(rows(db)) == {"Bulk", "Recent"}
    assert files(root) == after["Bulk"].paths | after["Recent"].paths
    assert shared not in files(root)


def _pending_deliveries(db: Database) -> list[dict[str, Any]]:
    return db.call(
        lambda s: [
            {"id": d.id, "attempts": d.attempts}
            for d in s.exec(select(Delivery).where(Delivery.status == DeliveryStatus.PENDING))
        ]
    )


async def test_concurrent_purges_share_the_work(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    """Two purges at once (two processes' writers: ``--workers N``, or the command
    while the relay runs) never fail, and every row and copy is counted once."""
    db, root = relay.db, config.archive.path
    second_shop = register(
        relay, buyer=parties.buyer, seller=("other@seller2.example",), order_id="ORD-2"
    )
    for n in range(4):
        both = build(frm=parties.buyer, to=parties.seller_token, subject=f"Both {n}")
        await send(
            relay,
            both,
            sender=parties.buyer,
            recipients=[parties.seller_token, second_shop.seller_token],
        )
    await wait_until(
        lambda: list(statuses(db).values()) == [MessageStatus.DELIVERED] * 8, timeout=15
    )
    stored = files(root)
    assert len(stored) == 12  # four shared received copies, eight delivered ones
    old_day = (root / sorted(stored)[0]).parent
    clock.advance(PAST_RETENTION)

    others = [Database(config.database) for _ in range(2)]
    try:
        reports = await asyncio.gather(
            *(
                asyncio.to_thread(retention.purge, other, relay.archive, DAYS, batch_size=1)
                for other in others
            )
        )
    finally:
        for other in others:
            other.dispose()
    assert sum(r.messages for r in reports) == 8
    assert sum(r.copies for r in reports) == 12
    assert sum(r.thread_ids for r in reports) == 8
    assert rows(db) == {} and files(root) == set()
    assert counts(db) == Counts(0, 0, 0, 0, 0)
    assert not old_day.exists()  # an emptied day directory goes too


# --- the command line ---------------------------------------------------------------------


async def cli(config_file: Path, *args: str) -> tuple[int, str, str]:
    """``relay -c config_file ARGS``, in this process: (status, stdout, stderr)."""
    result = await asyncio.to_thread(relay_cli, "-c", str(config_file), *args)
    return result.code, result.raw.decode(), result.err


def make_old(db: Database, days: int) -> None:
    """Move every message and Message-ID mapping ``days`` into the past: the command
    runs in another process, on the real clock."""

    def run(s: Session) -> None:
        for table in (Message, MessageIdMap):
            for row in s.exec(select(table)).all():  # type: ignore[call-overload]
                row.created_at -= timedelta(days=days)
                s.add(row)

    db.write(run)


async def test_archive_purge_command(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties, tmp_path: Path
) -> None:
    db, root = relay.db, config.archive.path
    unset = config.model_copy(update={"archive": ArchiveConfig(path=root)})
    code, out, err = await cli(config_file(unset, tmp_path / "unset.yaml"), "archive", "purge")
    assert (code, out) == (2, "")
    assert err == (
        f"error: archive.retention_days is not set in {tmp_path / 'unset.yaml'}; set it to"
        " the number of days to keep archived messages\n"
    )

    await buyer_writes(relay, parties, subject="First")
    await buyer_writes(relay, parties, subject="Second")
    await wait_until(lambda: list(statuses(db).values()) == [MessageStatus.DELIVERED] * 2)
    make_old(db, DAYS + 1)
    await buyer_writes(relay, parties, subject="Recent")
    await wait_until(lambda: statuses(db).get("Recent") is MessageStatus.DELIVERED)
    stored = files(root)
    path = config_file(config, tmp_path / "relay.yaml")

    code, out, err = await cli(path, "archive", "purge", "--dry-run", "--json")
    assert (code, err) == (0, "")
    dry = json.loads(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", dry.pop("cutoff"))
    assert dry == {
        "dry_run": True,
        "retention_days": DAYS,
        "purged_messages": 2,
        "removed_copies": 4,
        "purged_message_id_mappings": 2,
        "kept_quarantined": 0,
        "kept_undelivered": 0,
        "kept_other": 0,
        "copies_not_removed": 0,
    }
    assert set(rows(db)) == {"First", "Second", "Recent"} and files(root) == stored

    code, out, err = await cli(path, "archive", "purge")
    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf"purged 2 messages older than {DAYS} days \(\d{{4}}-\d\d-\d\d \d\d:\d\d UTC\),"
        " removed 4 stored copies and 2 Message-ID mappings; kept 0 quarantined and"
        " 0 undelivered\n",
        out,
    ), out
    assert set(rows(db)) == {"Recent"}
    assert files(root) == rows(db)["Recent"].paths

    code, out, err = await cli(path, "archive", "purge", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["purged_messages"] == 0


# --- the running relay ------------------------------------------------------------------


async def test_the_running_relay_purges_on_its_own(
    config: RelayConfig,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relay.retention")
    monkeypatch.setattr(retention, "FIRST_DELAY", 0.05)
    monkeypatch.setattr(retention, "INTERVAL", 0.2)
    real_purge = retention.purge
    calls = 0

    def failing_once(*args: Any, **kw: Any) -> retention.PurgeReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return real_purge(*args, **kw)

    monkeypatch.setattr(retention, "purge", failing_once)
    relay = Relay(config)
    await relay.start()
    (purging,) = [t for t in asyncio.all_tasks() if t.get_name() == "relay-archive-purge"]
    try:
        parties = register(relay)
        await buyer_writes(relay, parties, subject="Old news")
        await wait_until(lambda: statuses(relay.db) == {"Old news": MessageStatus.DELIVERED})
        await wait_until(lambda: calls >= 3)  # the first run failed; the relay purges on
        assert "archive purge failed, trying again at the next run" in caplog.text
        assert "RuntimeError: disk on fire" in caplog.text
        assert set(rows(relay.db)) == {"Old news"}  # not old yet
        stored = files(config.archive.path)
        assert len(stored) == 2

        clock.advance(PAST_RETENTION)
        await wait_until(lambda: rows(relay.db) == {}, timeout=10)
        await wait_until(lambda: files(config.archive.path) == set())

        def purged() -> list[str]:
            return [r.getMessage() for r in caplog.records if "purged 1 " in r.getMessage()]

        await wait_until(lambda: bool(purged()))  # logged once the run is over
        assert purged()[0].startswith(f"archive purge: purged 1 message older than {DAYS}")
        assert "removed 2 stored copies" in purged()[0]

        # It goes on relaying meanwhile, and stops cleanly.
        await buyer_writes(relay, parties, subject="New")
        await wait_until(lambda: statuses(relay.db) == {"New": MessageStatus.DELIVERED})
    finally:
        await relay.stop()
    # No run after stop: the task that runs them has ended, its last run finished.
    assert purging.done() and not purging.cancelled() and purging.exception() is None


def test_report_wording() -> None:
    cutoff = retention.cutoff_for(30, clock.now())
    report = retention.PurgeReport(30, cutoff, messages=1, copies=1, thread_ids=1)
    assert ", removed 1 stored copy and 1 Message-ID mapping; kept 0 quarantined" in (
        report.describe()
    )
    assert retention.cutoff_for(10**9).year == 1  # longer than the calendar: keep all
