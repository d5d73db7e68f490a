"""Sellers' response times (``relay responses``), on scripted timelines.

Every message goes through real SMTP to a relay started in the test; time moves
only with ``relay.core.clock.advance`` between the sends, so the figures come from the
timestamps the relay itself wrote.  Each test runs on SQLite and on PostgreSQL.
Response times include the real seconds the sends take, hence the ``about``.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import event
from sqlmodel import Session, select

from relay.app import Relay
from relay.cli import main
from relay.core import clock
from relay.core.config import RelayConfig
from relay.ops.response_times import SellerResponses, format_duration, response_stats
from relay.storage import directory
from relay.storage.models import Message, MessageStatus
from tests.helpers import Parties, Sink, buyer_writes, register, seller_writes, wait_until

HOUR = 3600.0


def hours(n: float) -> None:
    clock.advance(timedelta(hours=n))


def about(seconds: float | None, expected_hours: float) -> bool:
    """Equal to ``expected_hours`` give or take the real time the sends took."""
    return seconds is not None and abs(seconds - expected_hours * HOUR) < 60


def stats(relay: Relay, **kw: Any) -> list[SellerResponses]:
    return relay.db.call(response_stats, now=clock.now(), **kw)


def figures(relay: Relay, seller_id: int) -> SellerResponses:
    (one,) = stats(relay, seller_id=seller_id)
    return one


def counts(f: SellerResponses) -> dict[str, int]:
    return {
        "buyer_messages": f.buyer_messages,
        "within_24h": f.within_24h,
        "late": f.late,
        "open": f.open,
        "open_late": f.open_late,
        "no_response_needed": f.no_response_needed,
    }


def another_buyer(relay: Relay, parties: Parties, buyer: str, order_id: str) -> Parties:
    """A second conversation with the same seller."""

    def run(s: Session) -> Parties:
        _order, conv = directory.add_order(
            s, order_id, buyer_email=buyer, buyer_name="Buyer", seller_id=parties.seller_id
        )
        assert conv.id is not None
        domain = parties.seller_token.partition("@")[2]
        return Parties(
            parties.seller_id,
            conv.id,
            buyer,
            parties.seller,
            f"{conv.buyer_token}@{domain}",
            f"{conv.seller_token}@{domain}",
        )

    return relay.db.call(run)


async def delivered(sink: Sink, count: int) -> None:
    """Wait for the sink, so that no delivery is in flight when the clock jumps."""
    await sink.wait_for(count)


def statuses(relay: Relay) -> list[MessageStatus]:
    def run(s: Session) -> list[MessageStatus]:
        return [m.status for m in s.exec(select(Message).order_by(Message.id)).all()]  # type: ignore[arg-type]

    return relay.db.call(run)


class Cli:
    """``relay`` in this process (it shares the test's clock), on the relay's database."""

    def __init__(self, config: RelayConfig, tmp_path: Path) -> None:
        self.path = tmp_path / "cli.yaml"
        self.path.write_text(
            f"marketplace: {{domain: {config.marketplace.domain}}}\n"
            f"database: {{url: {json.dumps(config.database.url)}}}\n"
            f"archive: {{path: {json.dumps(str(config.archive.path))}}}\n"
            f"filters: {{rules: {json.dumps(str(config.filters.rules))}}}\n",
            encoding="utf-8",
        )

    async def __call__(self, *args: str) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(
            runner.invoke, main, ["-c", str(self.path), *args], catch_exceptions=False
        )

    async def json(self, *args: str) -> Any:
        result = await self(*args, "--json")
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def cli(config: RelayConfig, tmp_path: Path) -> Cli:
    return Cli(config, tmp_path)


# --- the timelines ----------------------------------------------------------------


async def test_within_late_open_and_open_late(relay: Relay, sink: Sink, parties: Parties) -> None:
    """Four conversations of one seller: answered in 2 h, answered in 30 h, never
    answered (30 h by now), and asked an hour ago.  An out-of-office from a fifth
    buyer starts no clock; a second seller is counted apart."""
    answered_soon = parties
    answered_late = another_buyer(relay, parties, "ana@buyer.example", "ORD-2")
    never = another_buyer(relay, parties, "ben@buyer.example", "ORD-3")
    recent = another_buyer(relay, parties, "cy@buyer.example", "ORD-4")
    away = another_buyer(relay, parties, "dee@buyer.example", "ORD-5")
    other = register(
        relay,
        buyer="eve@buyer.example",
        seller=("desk@other.example",),
        seller_name="Other",
        order_id="ORD-6",
    )
    quiet = register(
        relay,
        buyer="fay@buyer.example",
        seller=("q@quiet.example",),
        seller_name="Quiet",
        order_id="ORD-7",
    )

    for p in (answered_soon, answered_late, never, other):
        await buyer_writes(relay, p, subject="Question")
    await buyer_writes(
        relay, away, subject="Out of office", headers={"Auto-Submitted": "auto-replied"}
    )
    await delivered(sink, 5)
    hours(2)
    await seller_writes(relay, answered_soon, subject="Re: Question")
    await delivered(sink, 6)
    hours(27)  # 29 h
    await buyer_writes(relay, recent, subject="Question")
    await delivered(sink, 7)
    hours(1)  # 30 h
    await seller_writes(relay, answered_late, subject="Re: Question")
    await delivered(sink, 8)

    f = figures(relay, parties.seller_id)
    assert f.seller_name == "Hà Nội Crafts"
    assert counts(f) == {
        "buyer_messages": 4,
        "within_24h": 1,
        "late": 1,
        "open": 1,
        "open_late": 1,
        "no_response_needed": 0,
    }
    assert f.share_within_24h == pytest.approx(1 / 3)
    # Nearest rank over [2 h, 30 h]: the median is the first, p90 the second.
    assert about(f.median_seconds, 2) and about(f.p90_seconds, 30)

    everyone = stats(relay)
    assert [s.seller_id for s in everyone] == [parties.seller_id, other.seller_id]
    assert everyone[0] == f
    assert counts(everyone[1]) == {
        "buyer_messages": 1,
        "within_24h": 0,
        "late": 0,
        "open": 0,
        "open_late": 1,
        "no_response_needed": 0,
    }
    assert everyone[1].share_within_24h == 0.0
    assert everyone[1].median_seconds is None and everyone[1].p90_seconds is None
    # A known seller without buyer messages gets zeros; an unknown one is an error.
    nothing = figures(relay, quiet.seller_id)
    assert counts(nothing) == dict.fromkeys(counts(nothing), 0)
    assert nothing.share_within_24h is None and nothing.median_seconds is None
    with pytest.raises(directory.DirectoryError, match="no seller with id 999"):
        stats(relay, seller_id=999)

    # The recent question turns late 24 h after it was sent.
    hours(22.5)
    assert figures(relay, parties.seller_id).open == 1
    hours(1)
    later = figures(relay, parties.seller_id)
    assert (later.open, later.open_late) == (0, 2)


async def test_several_buyer_messages_are_answered_together(
    relay: Relay, sink: Sink, parties: Parties
) -> None:
    """Buyer at 0 h and 20 h, answer at 30 h: both waited 30 h (late).  In another
    conversation, buyer at 0 h and 5 h, answer at 10 h: both waited 10 h.  A
    question after an answer starts a new clock."""
    slow = parties
    quick = another_buyer(relay, parties, "ana@buyer.example", "ORD-2")
    await buyer_writes(relay, slow, subject="Engraving?")
    await buyer_writes(relay, quick, subject="Colour?")
    await delivered(sink, 2)
    hours(5)
    await buyer_writes(relay, quick, subject="Colour? (again)")
    await delivered(sink, 3)
    hours(5)  # 10 h
    await seller_writes(relay, quick, subject="Re: Colour?")
    await delivered(sink, 4)
    hours(10)  # 20 h
    await buyer_writes(relay, slow, subject="Hello?")
    await delivered(sink, 5)
    hours(10)  # 30 h
    await seller_writes(relay, slow, subject="Re: Engraving?")
    await delivered(sink, 6)

    f = figures(relay, parties.seller_id)
    assert counts(f) == {
        "buyer_messages": 4,
        "within_24h": 2,
        "late": 2,
        "open": 0,
        "open_late": 0,
        "no_response_needed": 0,
    }
    assert f.share_within_24h == 0.5
    # [10 h, 10 h, 30 h, 30 h]: rank 2 and rank 4.
    assert about(f.median_seconds, 10) and about(f.p90_seconds, 30)

    hours(1)
    await buyer_writes(relay, quick, subject="One more thing")
    await delivered(sink, 7)
    hours(2)
    f = figures(relay, parties.seller_id)
    assert (f.buyer_messages, f.within_24h, f.late, f.open) == (5, 2, 2, 1)


async def test_no_response_needed(relay: Relay, sink: Sink, parties: Parties, cli: Cli) -> None:
    """The seller's mark stops the clocks running before it, counts them neither
    within nor late, and leaves later buyer messages alone."""
    await buyer_writes(relay, parties, subject="Thanks, got it!")
    await buyer_writes(relay, parties, subject="Five stars")
    await delivered(sink, 2)
    hours(1)
    assert await cli.json("conversation", "no-response-needed", str(parties.conversation_id)) == {
        "conversation_id": parties.conversation_id,
        "messages": 2,
    }
    again = await cli("conversation", "no-response-needed", str(parties.conversation_id))
    assert again.exit_code == 0
    assert again.stdout == (
        f"conversation {parties.conversation_id}: no response needed;"
        " no buyer message was waiting for an answer\n"
    )
    unknown = await cli("conversation", "--json", "no-response-needed", "999")
    assert (unknown.exit_code, unknown.stdout) == (1, "")
    assert unknown.stderr == "error: no conversation with id 999\n"
    # The conversation itself is still shown the old way and the new one.
    shown = await cli.json("conversation", str(parties.conversation_id))
    assert shown == await cli.json("conversation", "show", str(parties.conversation_id))
    assert shown["messages"] == 2

    hours(30)
    await buyer_writes(relay, parties, subject="Actually, one question")
    await delivered(sink, 3)
    hours(25)
    f = figures(relay, parties.seller_id)
    assert counts(f) == {
        "buyer_messages": 3,
        "within_24h": 0,
        "late": 0,
        "open": 0,
        "open_late": 1,
        "no_response_needed": 2,
    }
    assert f.share_within_24h == 0.0
    assert f.median_seconds is None

    stopped = await cli("conversation", "no-response-needed", str(parties.conversation_id))
    assert stopped.stdout == (
        f"conversation {parties.conversation_id}: no response needed;"
        " stopped the clock of 1 buyer message\n"
    )
    f = figures(relay, parties.seller_id)
    assert (f.no_response_needed, f.open_late, f.share_within_24h) == (3, 0, None)


async def test_a_reply_that_never_reached_the_buyer_answers_nothing(
    relay: Relay, sink: Sink, parties: Parties, config: RelayConfig
) -> None:
    """A reply rejected or quarantined by a filter was not read by the buyer: the
    clock keeps running until a reply that was."""
    config.filters.rules.write_text(
        textwrap.dedent(
            """\
            rules:
              - id: no-marketing
                match: {keywords: [promo code]}
                action: reject
              - id: hold-payments
                match: {keywords: [wire transfer]}
                action: quarantine
            """
        ),
        encoding="utf-8",
    )
    assert relay.reload_rules()
    await buyer_writes(relay, parties, subject="Is it in stock?")
    await delivered(sink, 1)
    hours(1)
    await seller_writes(relay, parties, subject="Re: stock", body="Yes! Use promo code SAVE10")
    await delivered(sink, 2)  # the seller's notice
    await seller_writes(relay, parties, subject="Re: stock", body="Pay by wire transfer")
    await wait_until(lambda: MessageStatus.QUARANTINED in statuses(relay))
    assert MessageStatus.REJECTED in statuses(relay)
    hours(29)  # 30 h
    f = figures(relay, parties.seller_id)
    assert (f.buyer_messages, f.open_late, f.within_24h, f.late) == (1, 1, 0, 0)

    hours(1)  # 31 h
    await seller_writes(relay, parties, subject="Re: stock", body="Yes, it is in stock.")
    await delivered(sink, 3)
    f = figures(relay, parties.seller_id)
    assert (f.buyer_messages, f.open_late, f.late) == (1, 0, 1)
    assert about(f.median_seconds, 31)


# --- the command ------------------------------------------------------------------


async def test_responses_command(relay: Relay, sink: Sink, parties: Parties, cli: Cli) -> None:
    """Five questions answered in 3 h, 1 h, 30 h, 2 h and 26 h: the text line, the
    JSON, nearest-rank percentiles (median 3 h, p90 30 h), ``--since``,
    ``--seller``, and the errors."""
    sent = 0
    since = ""
    for i, wait in enumerate((3, 1, 30, 2, 26)):
        if i == 3:
            since = clock.now().isoformat()
        await buyer_writes(relay, parties, subject=f"Question {i}")
        hours(wait)
        await seller_writes(relay, parties, subject=f"Re: Question {i}")
        sent += 2
        await delivered(sink, sent)
        hours(1)

    text = await cli("responses")
    assert text.exit_code == 0, text.stderr
    assert text.stdout == (
        f"seller {parties.seller_id} (Hà Nội Crafts): 5 buyer messages,"
        " 3 answered within 24 h (60%), 2 late, 0 open and late, 0 open,"
        " 0 no response needed; median 3h 0m, p90 30h 0m\n"
    )
    (row,) = await cli.json("responses", "--seller", str(parties.seller_id))
    assert set(row) == {
        "seller_id",
        "seller_name",
        "buyer_messages",
        "within_24h",
        "late",
        "open",
        "open_late",
        "no_response_needed",
        "share_within_24h",
        "median_seconds",
        "p90_seconds",
    }
    assert row["seller_id"] == parties.seller_id and row["seller_name"] == "Hà Nội Crafts"
    assert (row["buyer_messages"], row["within_24h"], row["late"]) == (5, 3, 2)
    assert row["share_within_24h"] == 0.6
    assert about(row["median_seconds"], 3) and about(row["p90_seconds"], 30)

    # --since: only the last two questions (2 h and 26 h) start clocks.
    (recent,) = await cli.json("responses", "--since", since)
    assert (recent["buyer_messages"], recent["within_24h"], recent["late"]) == (2, 1, 1)
    assert about(recent["median_seconds"], 2) and about(recent["p90_seconds"], 26)
    tomorrow = (clock.now() + timedelta(days=1)).date().isoformat()
    assert await cli.json("responses", "--since", tomorrow) == []
    empty = await cli("responses", "--since", tomorrow)
    assert empty.stdout == "no buyer messages\n"

    bad = await cli("responses", "--since", "last week")
    assert bad.exit_code == 2 and "is not a date" in bad.stderr
    unknown = await cli("responses", "--seller", "999")
    assert (unknown.exit_code, unknown.stderr) == (1, "error: no seller with id 999\n")


async def test_one_select_and_no_message_rows(relay: Relay, sink: Sink, parties: Parties) -> None:
    """The figures are computed by the database: one SELECT, a row per seller."""
    await buyer_writes(relay, parties, subject="Question")
    await delivered(sink, 1)
    hours(1)
    await seller_writes(relay, parties, subject="Re: Question")
    await delivered(sink, 2)

    statements: list[str] = []
    me = threading.get_ident()  # the delivery worker uses the engine too

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == me:
            statements.append(statement)

    event.listen(relay.db.engine, "before_cursor_execute", record)
    try:
        (f,) = stats(relay)
    finally:
        event.remove(relay.db.engine, "before_cursor_execute", record)
    assert len(statements) == 1
    assert statements[0].lstrip().upper().startswith("WITH")
    assert (f.buyer_messages, f.within_24h) == (1, 1)


def test_format_duration() -> None:
    assert format_duration(2 * HOUR + 10 * 60 + 59) == "2h 10m"
    assert format_duration(30 * HOUR) == "30h 0m"
    assert format_duration(12 * 60 + 5) == "12m"
    assert format_duration(40.9) == "40s"
