"""Abuse limits (limits.*): each one exceeded over real SMTP gets its reply, and
the replies the session layer writes itself are the catalogue's (relay.replies).

Token guessing has its own module, test_guessing.
"""

from __future__ import annotations

import asyncio
import fcntl
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from relay.app import Relay
from relay.core.config import SmtpConfig, load_config
from relay.core.refusals import Refusal, Refused
from relay.core.yamlload import ConfigError
from relay.inbound import replies
from relay.inbound.limits import GuessingLimit, Networks, Penalty, SlidingWindow
from relay.inbound.replies import SmtpReply
from relay.storage.db import _sqlite_lock_path
from tests.helpers import Parties, Sink, build, make_config, register, send, wait_until

Start = Callable[..., Any]


def client(relay: Relay) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10)


async def test_max_recipients(limited: Start) -> None:
    relay, parties = await limited(max_recipients=1)
    async with client(relay) as smtp:
        await smtp.mail(parties.buyer)
        await smtp.rcpt(parties.seller_token)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
            await smtp.rcpt(parties.seller_token)
        assert (exc.value.code, exc.value.message[:5]) == (452, "4.5.3")


async def test_max_connections(limited: Start) -> None:
    relay, _ = await limited(max_connections=1)
    async with client(relay) as first:
        await first.noop()
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as exc:
            async with client(relay):
                pass
        assert exc.value.code == 421
    async with client(relay) as again:  # the slot is free again
        await again.noop()


async def test_connections_per_ip(limited: Start) -> None:
    relay, _ = await limited(connections_per_ip=2, trusted_networks=[])  # loopback untrusted
    for _ in range(2):
        async with client(relay) as smtp:
            await smtp.noop()
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as exc:
        async with client(relay):
            pass
    assert exc.value.code == 421


@pytest.mark.parametrize(
    "trusted", [None, ["10.0.0.0/8", "127.0.0.0/8"], ["::ffff:127.0.0.0/104", "127.0.0.1"]]
)
async def test_trusted_networks_are_exempt_from_connections_per_ip(
    limited: Start, trusted: list[str] | None
) -> None:
    """Loopback (an MTA of our own in front of the relay) is trusted by default."""
    relay, _ = await limited(
        connections_per_ip=2, **({} if trusted is None else {"trusted_networks": trusted})
    )
    for _ in range(5):
        async with client(relay) as smtp:
            await smtp.noop()


async def test_by_default_no_rate_of_new_sessions_is_refused(limited: Start) -> None:
    """A large provider opens many sessions from few addresses: by default only the
    concurrency cap applies, even to an untrusted address."""
    relay, _ = await limited(trusted_networks=[])
    for _ in range(70):  # more than the 60 a minute that used to be the default
        async with client(relay) as smtp:
            await smtp.noop()


async def test_messages_per_sender(limited: Start, sink: Sink) -> None:
    relay, parties = await limited(messages_per_sender=2)
    msg = build(frm=parties.buyer, to=parties.seller_token)
    for _ in range(2):
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    refused = exc.value.recipients[0]
    assert refused.code == 450 and "Too many messages from this sender" in refused.message


async def test_messages_per_conversation(limited: Start) -> None:
    relay, parties = await limited(messages_per_conversation=1)
    msg = build(frm=parties.buyer, to=parties.seller_token)
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    assert "in this conversation" in exc.value.recipients[0].message
    # The other direction has its own count.
    reply = build(frm=parties.seller, to=parties.buyer_token)
    await send(relay, reply, sender=parties.seller, recipients=[parties.buyer_token])


@pytest.mark.parametrize(
    ("limits", "extra", "text"),
    [
        ({"max_header_bytes": 2000}, {"X-Pad": "x" * 3000}, "Message header too large"),
        ({"max_headers": 10}, {f"X-H{i}": "v" for i in range(12)}, "Too many header fields"),
    ],
)
async def test_header_limits(
    limited: Start, limits: dict[str, int], extra: dict[str, str], text: str
) -> None:
    relay, parties = await limited(**limits)
    msg = build(frm=parties.buyer, to=parties.seller_token, headers=extra)
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    assert exc.value.code == 552 and text in exc.value.message


def test_sliding_window_forgets_old_events_and_bounds_memory() -> None:
    now = [0.0]
    window = SlidingWindow(2, 10.0, max_keys=3, clock=lambda: now[0])
    assert window.record("a") and window.record("a")
    assert not window.record("a") and window.exceeded("a")
    now[0] = 10.5
    assert not window.exceeded("a") and window.record("a")
    for key in "bcdef":
        window.record(key)
    assert len(window._events) == 3


def test_networks_match_addresses_of_either_family() -> None:
    trusted = Networks(["127.0.0.0/8", "::1/128", "2001:db8::/32"])
    assert "127.0.0.1" in trusted and "127.9.9.9" in trusted and "::1" in trusted
    assert "::ffff:127.0.0.1" in trusted  # an IPv4 client on a dual-stack socket
    assert "2001:db8::5" in trusted
    assert "10.0.0.1" not in trusted and "2001:db9::1" not in trusted
    assert "?" not in trusted and None not in trusted


@pytest.mark.parametrize(
    ("networks", "problem"),
    [
        ('["10.0.0.1/8"]', "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
        ('["localhost"]', "'localhost' is not an IP network such as 10.0.0.0/8"),
        ('["10.0.0.0/33"]', "'10.0.0.0/33' is not an IP network"),
        ("10.0.0.0/8", "trusted_networks"),  # a list is required, not one string
    ],
)
def test_a_bad_trusted_network_is_refused_at_load(
    tmp_path: Path, networks: str, problem: str
) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(f"limits:\n  trusted_networks: {networks}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "limits.trusted_networks" in str(exc.value) and problem in str(exc.value)


def test_a_config_with_the_earlier_limit_keys_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        "limits:\n  connections_per_ip: 60\n  unknown_recipients_per_ip: 20\n", encoding="utf-8"
    )
    limits = load_config(path).limits
    assert (limits.connections_per_ip, limits.unknown_recipients_per_ip) == (60, 20)
    assert limits.trusted_networks == ("127.0.0.0/8", "::1/128")


def test_the_soft_limit_may_not_exceed_the_hard_limit(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        "limits:\n  unknown_recipients_soft_limit: 30\n  unknown_recipients_hard_limit: 20\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="must not exceed unknown_recipients_hard_limit"):
        load_config(path)


def test_guessing_limit_steps() -> None:
    """The penalty schedule, with the per-IP hour on a clock of the test's own."""
    now = [0.0]
    limit = GuessingLimit(
        per_ip_per_hour=2,
        soft=2,
        hard=4,
        delay=1.5,
        trusted=Networks(["127.0.0.0/8"]),
        clock=lambda: now[0],
    )
    assert [limit.refused("192.0.2.1", n) for n in (1, 2, 3, 4, 5)] == [
        Penalty(0.0),
        Penalty(0.0),
        Penalty(1.5),
        Penalty(3.0),
        Penalty(0.0, close=True),
    ]
    assert limit.refused("192.0.2.1", 1) == Penalty(1.5)  # the IP used up its hour
    assert limit.refused("192.0.2.2", 1) == Penalty(0.0)  # another IP did not
    assert all(limit.refused("127.0.0.1", 1) == Penalty(0.0) for _ in range(5))  # trusted
    now[0] = 3600.5
    assert limit.refused("192.0.2.1", 1) == Penalty(0.0)  # an hour later


# --- Replies the session layer writes itself come from the catalogue ------------


async def test_session_replies_come_from_the_catalogue(relay: Relay, parties: Parties) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10) as smtp:
        mail = await smtp.mail(parties.buyer)
        assert (mail.code, f"{mail.code} {mail.message}") == (
            replies.SENDER_OK.code,
            str(replies.SENDER_OK),
        )
        for command, expected in [
            (b"DATA", replies.NEED_RCPT),
            (b"RCPT TO:<" + parties.seller_token.encode() + b">", replies.RECIPIENT_OK),
            (b"DATA now", replies.DATA_SYNTAX),
            (b"DATA", replies.START_DATA),
        ]:
            got = await smtp.execute_command(command)
            assert f"{got.code} {got.message}" == str(expected), command
        smtp.close()  # in the middle of DATA: hang up rather than QUIT


async def test_the_session_timeout_reply_comes_from_the_catalogue(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str]
) -> None:
    base = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
    smtp_config = SmtpConfig(port=0, hostname="mx.test", session_timeout=0.5)
    relay = Relay(base.model_copy(update={"smtp": smtp_config}))
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        assert (await reader.readline()).startswith(b"220 ")
        line = await asyncio.wait_for(reader.readline(), timeout=10)
        assert line == f"{replies.SESSION_TOO_LONG}\r\n".encode()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()
    finally:
        await relay.stop()


async def test_the_session_timeout_waits_for_the_reply_to_a_message_in_progress(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A session that runs out of time while its message is being committed gets
    the message's 250 first, then is closed: hung up on before the reply, its
    sender would send again a message the relay has already taken."""
    base = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
    smtp_config = SmtpConfig(port=0, hostname="mx.test", session_timeout=1.0)
    relay = Relay(base.model_copy(update={"smtp": smtp_config}))
    await relay.start()
    lock_path = _sqlite_lock_path(relay.config.database)
    assert lock_path is not None
    try:
        parties = register(relay)
        msg = build(frm=parties.buyer, to=parties.seller_token, body="taken once")
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=30)
        await client.connect()
        with lock_path.open("a+b") as lock:
            # Every writer of this database waits for this lock: the message's
            # commit cannot happen until the session's time is over.
            fcntl.flock(lock, fcntl.LOCK_EX)
            sending = asyncio.create_task(
                client.send_message(msg, sender=parties.buyer, recipients=[parties.seller_token])
            )
            await wait_until(lambda: "after its message's reply" in caplog.text, timeout=15)
            assert not sending.done()
            fcntl.flock(lock, fcntl.LOCK_UN)
        errors, reply = await asyncio.wait_for(sending, 30)
        assert errors == {} and "Message accepted" in reply
        (received,) = await sink.wait_for(1)
        assert b"taken once" in received.data
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.noop()  # closed after the reply
    finally:
        await relay.stop()


def test_every_catalogue_reply_is_used() -> None:
    """A reply nobody sends is a row of the README's table that is not true: each
    is either written by the SMTP front itself or the reply of a refusal that some
    module raises."""
    relay_dir = Path(replies.__file__).parents[1]
    sources = "\n".join(
        p.read_text(encoding="utf-8") for p in relay_dir.rglob("*.py") if p.name != "replies.py"
    )
    names = {v: n for n, v in vars(replies).items() if isinstance(v, SmtpReply)}
    assert len(names) > 20
    raised = {r for r in Refusal if re.search(rf"\bRefusal\.{r.name}\b", sources)}
    by_refusal = {names[reply] for refusal, reply in replies.REFUSALS.items() if refusal in raised}
    unused = [
        n for n in names.values() if n not in by_refusal and not re.search(rf"\b{n}\b", sources)
    ]
    assert unused == []


def test_every_refusal_has_its_reply() -> None:
    """A refusal without a reply would reach the sender as a 451 "temporary
    failure" for something permanent; a temporary one must be a 4xx."""
    assert set(replies.REFUSALS) == set(Refusal)
    for refusal, reply in replies.REFUSALS.items():
        assert (reply.code // 100 == 4) == refusal.temporary, refusal
    loop = replies.reply_for(Refused(Refusal.MAIL_LOOP, "Mail loop detected: 31 hops"))
    assert str(loop) == "554 5.4.6 Mail loop detected: 31 hops"
