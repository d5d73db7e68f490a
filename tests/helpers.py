"""Test building blocks: a recording (and fault-injecting) downstream SMTP sink,
a relay started in the test's own event loop, and small helpers to send mail.

Everything talks real SMTP over loopback, binds port 0 and uses a real
database; nothing of the relay is mocked.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import store
from relay.app import Relay
from relay.config import (
    ArchiveConfig,
    CampaignsConfig,
    DatabaseConfig,
    DeliveryConfig,
    DkimConfig,
    FiltersConfig,
    LimitsConfig,
    RelayConfig,
    RetryConfig,
    SmarthostConfig,
    SmtpConfig,
    UnsubscribeConfig,
)

DOMAIN = "marketplace.example.com"
DATA = Path(__file__).parent / "data"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any = None
    """The relay's end of the connection it came on (ip, port): one per connection."""

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, _class=EmailMessage, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class SinkHandler:
    """Records what it accepts; ``faults`` lists replies to give instead, in order."""

    messages: list[Received] = field(default_factory=list)
    rcpt_faults: list[str] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    """Recipient → the reply it always gets at RCPT."""
    data_faults: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    connections: dict[int, SMTP] = field(default_factory=dict)
    """The sessions that reached DATA, so a test can hang up on them."""

    def hang_up(self) -> None:
        """Close every connection from the sink's side, as an idle timeout does."""
        for protocol in self.connections.values():
            if protocol.transport is not None:
                protocol.transport.close()
        self.connections.clear()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if self.rcpt_faults:
            return self.rcpt_faults.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.connections[id(server)] = server
        if self.data_faults:
            return self.data_faults.pop(0)
        self.messages.append(
            Received(
                "" if envelope.mail_from in (None, "<>") else envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or b"",
                peer=session.peer,
            )
        )
        self.arrived.set()
        return "250 2.0.0 OK: queued"


class Sink:
    def __init__(self, handler: SinkHandler, server: asyncio.Server) -> None:
        self.handler = handler
        self.server = server

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    async def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        await wait_until(lambda: len(self.handler.messages) >= count, timeout)
        return self.handler.messages

    def to(self, address: str) -> list[Received]:
        return [m for m in self.handler.messages if address in m.rcpt_tos]


async def start_sink(port: int = 0, *, tls_context: ssl.SSLContext | None = None) -> Sink:
    """A downstream server on loopback; with ``tls_context`` it insists on STARTTLS."""
    handler = SinkHandler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="sink.test",
            enable_SMTPUTF8=True,
            tls_context=tls_context,
            require_starttls=tls_context is not None,
        ),
        "127.0.0.1",
        port,
    )
    return Sink(handler, server)


async def wait_until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def wait_until_async(cond: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def make_config(
    tmp: Path,
    *,
    sink_port: int,
    dkim_key: Path | None = None,
    rules: Path | None = None,
    database_url: str | None = None,
    **sections: Any,
) -> RelayConfig:
    """A config for tests: delivery to the sink, fast retries, and the database at
    ``database_url`` (the ``database_url`` fixture), or SQLite in ``tmp``."""
    if rules is None:
        rules = tmp / "filters.yaml"
        rules.write_text("rules: []\n", encoding="utf-8")
    base = RelayConfig(
        smtp=SmtpConfig(port=0, hostname="mx.test"),
        database=DatabaseConfig(
            url=database_url or f"sqlite:///{tmp / 'relay.db'}", busy_timeout=2
        ),
        archive=ArchiveConfig(path=tmp / "archive"),
        delivery=DeliveryConfig(
            mode="smtp",
            smtp=SmarthostConfig(host="127.0.0.1", port=sink_port, timeout=5),
            retry=RetryConfig(initial_delay=0.2, max_delay=1, give_up_after=30),
            poll_interval=0.2,
            claim_timeout=30,
        ),
        filters=FiltersConfig(rules=rules or tmp / "filters.yaml"),
        dkim=DkimConfig(private_key=dkim_key or tmp / "dkim" / "relay.key"),
        # Tests send a lot from one address and IP; test_limits sets its own limits.
        # Port 0: tests run side by side, and a developer's relay may hold 8025.
        campaigns=CampaignsConfig(unsubscribe=UnsubscribeConfig(listen="127.0.0.1:0")),
        limits=LimitsConfig(
            connections_per_ip=100_000,
            messages_per_sender=100_000,
            messages_per_conversation=100_000,
            unknown_recipients_per_ip=100_000,
        ),
    )
    if sections:
        base = base.model_copy(update=sections)
    return base


@dataclass
class Parties:
    seller_id: int
    conversation_id: int
    buyer: str
    seller: str
    buyer_token: str
    seller_token: str


def register(
    relay: Relay,
    *,
    buyer: str = "maria@buyer.example",
    buyer_name: str = "Maria Santos",
    seller: Sequence[str] = ("shop@seller.example",),
    seller_name: str = "Hà Nội Crafts",
    order_id: str = "ORD-1",
    categories: Sequence[str] = (),
) -> Parties:
    """A seller, a buyer and an order: the conversation with its two tokens."""

    def run(s: Any) -> Parties:
        sel = store.add_seller(s, name=seller_name, emails=list(seller))
        assert sel.id is not None
        _order, conv = store.add_order(
            s,
            order_id,
            buyer_email=buyer,
            buyer_name=buyer_name,
            seller_id=sel.id,
            categories=list(categories),
        )
        assert conv.id is not None
        return Parties(
            sel.id,
            conv.id,
            buyer,
            seller[0],
            f"{conv.buyer_token}@{DOMAIN}",
            f"{conv.seller_token}@{DOMAIN}",
        )

    return relay.db.call(run)


def build(
    *,
    frm: str,
    to: str,
    subject: str = "Hello",
    body: str = "Hi there",
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = email.utils.make_msgid(domain=frm.rpartition("@")[2].strip(">"))
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg


async def send(
    relay: Relay, msg: EmailMessage | bytes, *, sender: str, recipients: Sequence[str]
) -> tuple[dict[str, Any], str]:
    return await aiosmtplib.send(
        msg,
        hostname="127.0.0.1",
        port=relay.port,
        sender=sender,
        recipients=list(recipients),
        timeout=30,
    )


async def buyer_writes(relay: Relay, parties: Parties, **message: Any) -> None:
    """The buyer sends ``build(**message)`` to the seller token, from their address."""
    msg = build(frm=parties.buyer, to=parties.seller_token, **message)
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])


async def seller_writes(relay: Relay, parties: Parties, **message: Any) -> None:
    """The seller sends ``build(**message)`` to the buyer token, from their address."""
    msg = build(frm=parties.seller, to=parties.buyer_token, **message)
    await send(relay, msg, sender=parties.seller, recipients=[parties.buyer_token])


async def send_null_sender(relay: Relay, data: bytes, *, recipients: Sequence[str]) -> None:
    """Send with the null envelope sender (``MAIL FROM:<>``), as bounces are."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=30)
    async with client:
        await client.sendmail("", list(recipients), data)
