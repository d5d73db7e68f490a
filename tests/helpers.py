"""Test building blocks: a recording (and fault-injecting) downstream SMTP sink,
a relay started in the test's own event loop, small helpers to send mail, to
wait until the relay is idle, and to run the ``relay`` command: in this process
(click's CliRunner) or, where the process itself is what a test is about
(signals, start and stop, what a real process prints), as a process.

Everything talks real SMTP over loopback, binds port 0 (or a port just found
free) and uses a real database; nothing of the relay is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session
from click.testing import CliRunner

from relay.app import Relay
from relay.cli import main as relay_main
from relay.core.config import (
    ApiConfig,
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
    WebhooksConfig,
    load_config,
)
from relay.delivery import spool
from relay.storage import directory
from relay.storage.db import Database

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


def pending_deliveries(db: Database) -> int:
    """Deliveries not finished yet: due, leased to a worker, or waiting for a retry."""
    count, _oldest = db.call(spool.pending_summary)
    return count


async def queue_empty(config_file: Path) -> bool:
    """Whether no delivery is pending in the database that ``config_file`` names:
    ``wait_idle`` for a relay that runs as a process of its own."""

    def check() -> bool:
        db = Database(load_config(config_file).database)
        try:
            return pending_deliveries(db) == 0
        finally:
            db.dispose()

    return await asyncio.to_thread(check)


async def wait_idle(*relays: Relay, timeout: float = 15) -> None:
    """Wait until ``relays`` have nothing left to send: no message between DATA and
    its reply, no delivery pending in the database (due, leased or waiting for a
    retry), and no delivery in flight in their workers.

    From then on nothing reaches the sink unless the test sends more mail, so a
    check that something did *not* arrive, made after this, proves it instead of
    betting that a pause was long enough.  A relay that keeps a delivery pending
    (a retry, a duplicate about to be sent) never gets here: the wait fails.
    """

    async def idle() -> bool:
        if any(r.handler is not None and r.handler.busy for r in relays):
            return False
        for r in relays:
            if await asyncio.to_thread(pending_deliveries, r.db):
                return False
        return all(r.worker is None or r.worker.in_flight == 0 for r in relays)

    await wait_until_async(idle, timeout)


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
        api=ApiConfig(listen="127.0.0.1:0"),
        webhooks=WebhooksConfig(
            first_retry=0.3,
            max_retry_delay=1,
            poll_interval=0.2,
            timeout=2,
            give_up_after=60,
            late_check_interval=0.3,
        ),
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
        sel = directory.add_seller(s, name=seller_name, emails=list(seller))
        assert sel.id is not None
        _order, conv = directory.add_order(
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


# --- the relay command ------------------------------------------------------------------

RELAY = str(Path(sys.executable).with_name("relay"))
"""The ``relay`` console script of this Python, for tests that need a real process."""


def free_port() -> int:
    """A loopback port nobody listens on now, for a ``relay serve`` process to bind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class CliResult:
    """What a ``relay`` command printed, and its exit status."""

    args: Sequence[str | bytes]
    code: int
    raw: bytes
    """Standard output, as bytes (``archive show --raw`` prints a message as received)."""
    err: str

    @property
    def out(self) -> str:
        """Standard output of a command that succeeded."""
        assert self.code == 0, self
        return self.raw.decode("utf-8")

    def json(self) -> Any:
        """The JSON a command printed (``--json``); it must have succeeded."""
        assert self.code == 0, self
        return json.loads(self.raw)

    def failed(self, code: int = 1) -> str:
        """The one-line error of a failed request (exit status 1), or the usage
        text of a usage error (2): nothing on standard output either way."""
        assert self.code == code, self
        assert self.raw == b"", self
        if code == 1:
            assert self.err.startswith("error: ") and self.err.count("\n") == 1, self
        else:
            assert self.err.startswith("Usage: relay "), self
        return self.err.strip()


_INVOKING = threading.Lock()
"""CliRunner swaps ``sys.stdout`` and ``sys.stderr`` for the whole process, and
``cwd`` is the process's: one invocation at a time, whichever thread it comes from."""


def relay_cli(
    *args: str | bytes,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> CliResult:
    """``relay ARGS``, run in this process by click's CliRunner: no Python start-up.

    ``RELAY_CONFIG`` is unset unless ``env`` sets it; ``cwd`` is the working
    directory during the command (where ``config/relay.yaml`` is looked for by
    default), the test's own otherwise.  Bytes arguments reach the
    command as Python decodes a process's arguments (``os.fsdecode``).  An
    exception that escapes the command fails the test, as a traceback would in
    a process.  It blocks: from a coroutine, call it with ``asyncio.to_thread``
    so that a relay or a sink in the event loop goes on answering meanwhile.
    """
    environ: dict[str, str | None] = {"RELAY_CONFIG": None, **(env or {})}
    argv = [a if isinstance(a, str) else os.fsdecode(a) for a in args]
    with _INVOKING, contextlib.chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(
            relay_main,
            argv,
            prog_name="relay",
            env=environ,
            input=stdin,
            catch_exceptions=False,
        )
    return CliResult(args, result.exit_code, result.stdout_bytes, result.stderr)


def relay_process(*args: str | bytes, cwd: Path) -> CliResult:
    """``relay ARGS`` as a process of its own, in ``cwd``, without ``RELAY_CONFIG``:
    for what only a real process shows (``serve`` binding a port, its stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    proc = subprocess.run([RELAY, *args], cwd=cwd, env=env, capture_output=True, timeout=60)
    return CliResult(args, proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


async def cli(config: Path, *args: str) -> Any:
    """``relay -c config ARGS --json``, which must succeed: its output, parsed."""
    result = await asyncio.to_thread(relay_cli, "-c", str(config), *args, "--json")
    return result.json()


def config_file(config: RelayConfig, path: Path) -> Path:
    """``config`` written to ``path`` as a file for the ``relay`` command (JSON is YAML)."""
    path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    return path


def write_config(tmp: Path, *, smtp_port: int, sink_port: int, url: str | None = None) -> Path:
    """A config file in ``tmp`` for ``relay serve``: SMTP on ``smtp_port``,
    delivery to a sink on ``sink_port``, fast retries; the database at ``url``,
    or SQLite under ``tmp``."""
    path = tmp / "relay.yaml"
    path.write_text(
        f"""
smtp: {{host: 127.0.0.1, port: {smtp_port}, hostname: mx.crash.test}}
database: {{url: "{url or "sqlite:///state/relay.db"}"}}
archive: {{path: state/archive}}
delivery:
  mode: smtp
  smtp: {{host: 127.0.0.1, port: {sink_port}, timeout: 5}}
  retry: {{initial_delay: 0.2, max_delay: 0.5, give_up_after: 120}}
  poll_interval: 0.2
filters: {{rules: filters.yaml}}
dkim: {{private_key: state/dkim.key}}
campaigns: {{unsubscribe: {{listen: "127.0.0.1:0"}}}}
api: {{listen: "127.0.0.1:0"}}
webhooks: {{first_retry: 0.3, max_retry_delay: 1, poll_interval: 0.2, timeout: 2}}
""",
        encoding="utf-8",
    )
    (tmp / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    return path


async def seller_token(config: Path) -> str:
    """Registers a seller and an order with maria@buyer.example; the seller's token."""
    seller = await cli(
        config, "seller", "add", "--name", "Crafts", "--email", "shop@seller.example"
    )
    order = await cli(
        config, "order", "add", "O-1", "--buyer", "maria@buyer.example",
        "--seller", str(seller["seller_id"]),
    )  # fmt: skip
    token: str = order["seller_token"]
    return token


@contextlib.asynccontextmanager
async def serving(
    config: Path, port: int, *extra: str, log: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``relay serve -c config EXTRA`` as a process, once it listens on ``port``.

    Its standard error is a pipe (``communicate()`` after it exits), or the file
    ``log``, which a test can read while it runs.  Killed with its process group
    (its workers) if still running at the end.
    """
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("ab")) if log else asyncio.subprocess.PIPE
        proc = await asyncio.create_subprocess_exec(
            RELAY, "serve", "-c", str(config), *extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: workers included in the cleanup
        )  # fmt: skip
        try:

            async def up() -> bool:
                assert proc.returncode is None, f"relay serve exited with {proc.returncode}"
                return await _listening(port)

            await wait_until_async(up, timeout=20)
            yield proc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


async def _listening(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True
