"""Several relays on one PostgreSQL database: each message goes out exactly once.

Two relays share the database and the archive, as a cluster does.  Mail sent to
both is delivered once each, never twice, while their workers claim from the same
queue; a relay killed in the middle of a delivery leaves its lease to run out, and
the relay still running sends the message then.  PostgreSQL only: skipped, with
the reason, when no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import aiosmtplib
import pytest_asyncio
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlmodel import Session, select

from relay.app import Relay
from relay.core.clock import as_utc
from relay.core.config import DatabaseConfig, RelayConfig
from relay.delivery.outbound import DeliveryResult, Transport, make_transport
from relay.storage.db import Database
from relay.storage.models import Delivery, DeliveryAttempt, DeliveryStatus, utcnow
from tests.helpers import (
    Sink,
    SinkHandler,
    build,
    buyer_writes,
    cli,
    free_port,
    make_config,
    queue_empty,
    register,
    send,
    serving,
    wait_idle,
    wait_until,
    wait_until_async,
)

LEASE = 2.0
"""``delivery.claim_timeout`` of the relays that get killed: short, to keep the test fast."""


def cluster_config(
    tmp: Path, sink: Sink, dkim_key: tuple[Path, str], url: str, **delivery: object
) -> RelayConfig:
    """One member's config: the shared database and archive (``tmp``), its own port."""
    config = make_config(tmp, sink_port=sink.port, dkim_key=dkim_key[0], database_url=url)
    return config.model_copy(update={"delivery": config.delivery.model_copy(update=delivery)})


@dataclass
class Counting:
    """A relay's own transport, counting the messages it handed over."""

    transport: Transport
    sent: int = 0

    async def send(self, envelope_from: str, recipient: str, data: bytes) -> DeliveryResult:
        result = await self.transport.send(envelope_from, recipient, data)
        self.sent += 1
        return result

    async def close(self) -> None:
        await self.transport.close()


async def test_two_relays_deliver_each_message_exactly_once(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], pg_url: str
) -> None:
    configs = [
        cluster_config(tmp_path, sink, dkim_key, pg_url, concurrency=4, poll_interval=0.05)
        for _ in range(2)
    ]
    transports = [Counting(make_transport(c)) for c in configs]
    relays = [Relay(c, transport=t) for c, t in zip(configs, transports, strict=True)]
    for r in relays:
        await r.start()
    try:
        parties = register(relays[0])
        count = 40

        async def one(i: int) -> None:
            msg = build(frm=parties.buyer, to=parties.seller_token, subject=f"cluster {i}")
            await send(relays[i % 2], msg, sender=parties.buyer, recipients=[parties.seller_token])

        await asyncio.gather(*(one(i) for i in range(count)))
        await sink.wait_for(count, timeout=30)
        await assert_all_delivered_once(relays[0], count)
        await wait_idle(*relays)  # a duplicate would be pending or in flight until sent
        subjects = Counter(str(m.message["Subject"]) for m in sink.messages)
        assert subjects == {f"cluster {i}": 1 for i in range(count)}
        assert sum(t.sent for t in transports) == count
        assert all(t.sent for t in transports), "both relays delivered"
    finally:
        for r in relays:
            await r.stop()


async def assert_all_delivered_once(relay: Relay, count: int) -> None:
    """Every delivery row ends delivered, with exactly one attempt: a 'delivered' one."""

    def rows(s: Session) -> tuple[list[Delivery], list[DeliveryAttempt]]:
        return list(s.exec(select(Delivery))), list(s.exec(select(DeliveryAttempt)))

    def done() -> bool:
        deliveries, _ = relay.db.call(rows)
        return all(d.status is DeliveryStatus.DELIVERED for d in deliveries)

    await wait_until(done, timeout=10)
    deliveries, attempts = relay.db.call(rows)
    assert len(deliveries) == count
    assert all(d.attempts == 1 and d.claimed_by is None for d in deliveries)
    assert sorted((a.delivery_id, a.outcome) for a in attempts) == sorted(
        (d.id, "delivered") for d in deliveries
    )


# --- a relay killed in the middle of a delivery ------------------------------------


@dataclass
class StallingHandler(SinkHandler):
    """Holds back its reply to the first DATA until released: that sender is stuck
    mid-delivery.  Later messages are accepted, with the time they completed."""

    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    completed_at: list[datetime] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        if not self.stalled.is_set():
            self.stalled.set()
            await self.release.wait()
            return "451 4.3.0 the client was gone long ago"
        reply = await super().handle_DATA(server, session, envelope)
        self.completed_at.append(utcnow())
        return reply


@pytest_asyncio.fixture
async def stalling_sink() -> AsyncIterator[Sink]:
    handler = StallingHandler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test", enable_SMTPUTF8=True), "127.0.0.1", 0
    )
    yield Sink(handler, server)
    handler.release.set()
    server.close()
    await server.wait_closed()


def write_member_config(
    tmp: Path, name: str, *, smtp_port: int, sink_port: int, url: str, dkim_key: Path
) -> Path:
    """``relay serve``'s config for the member ``name``: its own port; the database,
    the archive and the rules of the others; a short lease."""
    (tmp / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""
smtp: {{host: 127.0.0.1, port: {smtp_port}, hostname: {name}.cluster.test, pid_file: {name}.pid}}
database: {{url: "{url}", busy_timeout: 2}}
archive: {{path: archive}}
delivery:
  mode: smtp
  smtp: {{host: 127.0.0.1, port: {sink_port}, timeout: 20}}
  retry: {{initial_delay: 0.2, max_delay: 1, give_up_after: 60}}
  poll_interval: 0.2
  claim_timeout: {LEASE}
  concurrency: 2
filters: {{rules: filters.yaml}}
dkim: {{private_key: "{dkim_key}"}}
campaigns: {{unsubscribe: {{listen: "127.0.0.1:0"}}}}
api: {{listen: "127.0.0.1:0"}}
""",
        encoding="utf-8",
    )
    return path


async def test_a_relay_killed_mid_delivery_leaves_it_to_the_other_after_the_lease(
    tmp_path: Path, stalling_sink: Sink, dkim_key: tuple[Path, str], pg_url: str
) -> None:
    sink = stalling_sink
    handler = sink.handler
    assert isinstance(handler, StallingHandler)
    ports = {"a": free_port(), "b": free_port()}
    configs = {
        name: write_member_config(
            tmp_path, name, smtp_port=port, sink_port=sink.port, url=pg_url, dkim_key=dkim_key[0]
        )
        for name, port in ports.items()
    }
    # The command line on PostgreSQL: the marketplace back end registers the order.
    seller = await cli(
        configs["a"], "seller", "add", "--name", "Crafts", "--email", "shop@s.example"
    )
    order = await cli(
        configs["a"], "order", "add", "O-1", "--buyer", "maria@b.example",
        "--seller", str(seller["seller_id"]),
    )  # fmt: skip
    token = order["seller_token"]

    async with contextlib.AsyncExitStack() as running:
        a, b = await asyncio.gather(
            *(running.enter_async_context(serving(configs[n], ports[n])) for n in ("a", "b"))
        )
        # Both run before either dies, so neither one's start-up releases the lease
        # of a dead process: only the lease running out hands the delivery over.
        msg = build(frm="maria@b.example", to=token, subject="mid-delivery")
        await aiosmtplib.send(
            msg, hostname="127.0.0.1", port=ports["a"], sender="maria@b.example", recipients=[token]
        )
        await asyncio.wait_for(handler.stalled.wait(), 10)  # a relay waits for the DATA reply

        owner, until = await asyncio.to_thread(lease_of_the_only_delivery, pg_url)
        members = {a.pid: a, b.pid: b}
        pid = int(owner.split(":")[1])
        assert owner.startswith(f"{socket.gethostname()}:") and pid in members
        killed = members.pop(pid)
        (survivor,) = members.values()
        os.kill(killed.pid, signal.SIGKILL)
        await killed.wait()

        (got,) = await sink.wait_for(1, timeout=LEASE + 10)
        assert got.message["Subject"] == "mid-delivery"
        assert got.rcpt_tos == ["shop@s.example"]
        (completed,) = handler.completed_at
        assert completed >= until, "sent again only once the killed relay's lease ran out"
        # Recorded as delivered: the survivor has nothing left to send, the other is dead.
        await wait_until_async(lambda: queue_empty(configs["b"]), timeout=10)
        assert len(sink.messages) == 1

        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), 20) == 0
        _out, err = await survivor.communicate()
        assert b"Traceback" not in err

    # The command line shows it, from the same PostgreSQL database: one delivery,
    # one attempt (the killed relay's never got a reply, so it never counted).
    queued, listed = await asyncio.gather(
        cli(configs["b"], "queue", "list", "--all"),
        cli(configs["b"], "archive", "list"),
    )
    (row,) = queued
    assert row["status"] == "delivered" and row["attempts"] == 1
    (archived,) = listed
    assert archived["status"] == "delivered" and archived["subject"] == "mid-delivery"
    db = Database(DatabaseConfig(url=pg_url))
    try:
        attempts = db.call(lambda s: [a.outcome for a in s.exec(select(DeliveryAttempt))])
    finally:
        db.dispose()
    assert attempts == ["delivered"]


def lease_of_the_only_delivery(url: str) -> tuple[str, datetime]:
    db = Database(DatabaseConfig(url=url))
    try:
        d = db.call(lambda s: s.exec(select(Delivery)).one())
    finally:
        db.dispose()
    assert d.claimed_by is not None and d.claimed_until is not None
    return d.claimed_by, d.claimed_until


async def test_a_delivery_longer_than_its_lease_is_not_sent_twice(
    tmp_path: Path, stalling_sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> None:
    """The smarthost takes 3 s over a message; the lease is 0.9 s. The worker renews
    it while it waits, so neither it nor anyone else claims the row again."""
    sink = stalling_sink
    handler = sink.handler
    assert isinstance(handler, StallingHandler)
    config = cluster_config(
        tmp_path, sink, dkim_key, database_url, claim_timeout=0.9, poll_interval=0.1
    )
    relay = Relay(config)
    await relay.start()
    try:
        parties = register(relay)
        await buyer_writes(relay, parties, subject="slow smarthost")
        await asyncio.wait_for(handler.stalled.wait(), 10)
        worker = relay.worker
        assert worker is not None and worker.in_flight == 1
        _owner, until = await asyncio.to_thread(lease_of_the_only_delivery, database_url)
        # The smarthost stalls for three leases: past the end of the first lease...
        three_leases = as_utc(until) + timedelta(seconds=2 * config.delivery.claim_timeout)
        await wait_until(lambda: utcnow() > three_leases, timeout=15)
        # ... and the worker has looked at the queue twice since then (so at least
        # once wholly after): had the lease run out, that look would have claimed
        # the row again, and a second attempt would be in flight or at the sink.
        looked = worker.passes
        await wait_until(lambda: worker.passes >= looked + 2, timeout=15)
        assert worker.in_flight == 1
        assert sink.messages == []  # no second copy while the first is in flight
        owner, renewed = await asyncio.to_thread(lease_of_the_only_delivery, database_url)
        assert owner == worker.worker and as_utc(renewed) > three_leases
        handler.release.set()  # the stalled attempt gets a 451 and is retried
        (got,) = await sink.wait_for(1, timeout=15)
        assert got.message["Subject"] == "slow smarthost"
        await wait_idle(relay)
        assert len(sink.messages) == 1
    finally:
        await relay.stop()
