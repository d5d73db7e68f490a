"""The HTTP endpoints under abuse (SECURITY.md, "The HTTP endpoints").

Real sockets on loopback against the relay's own unsubscribe and metrics
endpoints: hundreds of half-sent POSTs hold no thread each and cannot stop SMTP,
slow clients are cut off at the deadlines, oversized requests get 413/431, and
no answer names the server software.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest

from relay.app import Relay
from relay.campaigns.unsubscribe import UnsubscribeEndpoint
from relay.core.config import MetricsConfig
from relay.core.httpserver import HttpLimits, WsgiServer
from tests.helpers import Sink, make_config, wait_until

pytestmark = pytest.mark.sqlite_only("HTTP parsing and limits; the database only answers 404")

TOKEN = "z" * 16  # no send has it: the app answers its "unknown link" page
ONE_CLICK = b"List-Unsubscribe=One-Click"
HALF_POST = (
    f"POST /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\n"
    f"Content-Length: {len(ONE_CLICK)}\r\n\r\n"
).encode() + ONE_CLICK[:10]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def parse(raw: bytes, seconds: float) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), raw[:200]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body, seconds)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after its answer ends it too)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(port: int, request: bytes, *, timeout: float = 15, host: str = "127.0.0.1") -> Answer:
    """Send ``request`` whole, read the answer until the server closes."""
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        raw = read_all(sock)
    return parse(raw, time.monotonic() - start)


def get(port: int, path: str, *, method: str = "GET", host: str = "127.0.0.1") -> Answer:
    return exchange(
        port, f"{method} {path} HTTP/1.1\r\nHost: relay.test\r\n\r\n".encode(), host=host
    )


@contextmanager
def half_sent_posts(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` clients that sent the head and part of the body of a POST, and wait."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=15)
            socks.append(sock)
            sock.sendall(HALF_POST)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def closed_within(socks: list[socket.socket], count: int, seconds: float) -> list[bytes]:
    """What the sockets the server closes got before it closed them: until
    ``count`` are closed, or ``seconds`` have passed."""
    got: dict[socket.socket, list[bytes]] = {sock: [] for sock in socks}
    closed: list[bytes] = []
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while len(closed) < count and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[sock].append(chunk)
                else:
                    selector.unregister(sock)
                    closed.append(b"".join(got[sock]))
    return closed


def assert_no_banner(answer: Answer) -> None:
    assert "server" not in answer.headers, answer.headers
    assert b"WSGIServer" not in answer.body


async def ehlo_seconds(relay: Relay) -> float:
    """How long the relay's SMTP server takes to greet and answer EHLO."""
    start = time.monotonic()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10) as smtp:
        code, _ = await smtp.ehlo()
        assert code == 250
        code, _ = await smtp.noop()
        assert code == 250
    return time.monotonic() - start


def unsubscribe_server(relay: Relay) -> WsgiServer:
    assert relay.unsubscribe is not None
    return relay.unsubscribe.server


async def test_hundreds_of_half_sent_posts_hold_no_thread_and_smtp_answers(relay: Relay) -> None:
    server = unsubscribe_server(relay)
    port, cap = server.port, server.limits.max_connections
    assert (await asyncio.to_thread(get, port, f"/unsubscribe/{TOKEN}")).status == 404
    # The threads the relay and this test already have: the loop's executor
    # (asyncio.to_thread) grows to at most six on two cores; one worker of the
    # endpoint's pool has started.
    before = threading.active_count()
    under = cap - 16
    with half_sent_posts(port, under) as slow:
        # A well-behaved client is still answered, by the app, at once.
        answer = await asyncio.to_thread(get, port, f"/unsubscribe/{TOKEN}")
        assert answer.status == 404 and b"not known" in answer.body
        assert answer.seconds < 2
        await wait_until(lambda: server.connections == under)
        assert threading.active_count() <= before + server.limits.workers + 6
        assert await ehlo_seconds(relay) < 2

        # 800 in all: 16 more fill the cap, and the others get 503 at once, or are
        # closed at once (past a further bound); none of them is held open.
        with half_sent_posts(port, 800 - under) as over:
            assert len(slow) + len(over) == 800
            await wait_until(lambda: server.connections == cap)
            start = time.monotonic()
            refused = await asyncio.to_thread(closed_within, over, 800 - cap, 5)
            assert len(refused) == 800 - cap and time.monotonic() - start < 3
            busy = [raw for raw in refused if raw]
            assert busy, "no over-the-cap client got an answer"
            for raw in busy:
                assert parse(raw, 0).status == 503
            # A well-behaved client now gets a fast 503 (once the 503s to the
            # others are out: past a quarter of the cap, refusing is closing) ...
            await wait_until(lambda: server.refusing == 0)
            answer = await asyncio.to_thread(get, port, f"/unsubscribe/{TOKEN}")
            assert answer.status == 503 and answer.seconds < 2, answer
            assert b"busy" in answer.body
            assert_no_banner(answer)
            assert threading.active_count() <= before + server.limits.workers + 6
            assert await ehlo_seconds(relay) < 2
        # ... and its answer again once there is room.
        await wait_until(lambda: server.connections == under)
        answer = await asyncio.to_thread(get, port, f"/unsubscribe/{TOKEN}")
        assert answer.status == 404 and answer.seconds < 2
    await wait_until(lambda: server.connections == 0)
    answer = await asyncio.to_thread(get, port, f"/unsubscribe/{TOKEN}")
    assert answer.status == 404


def drip(port: int, stop_after: float) -> tuple[Answer, int]:
    """A slow-loris: one byte of an endless header every 0.2 s, until the server
    cuts it off (or ``stop_after`` seconds); (its answer, bytes it sent)."""
    start = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=stop_after) as sock:
        sock.sendall(f"GET /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\nX-Drip: ".encode())
        while time.monotonic() - start < stop_after:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            sock.settimeout(0.2)
            try:
                if sock.recv(65536, socket.MSG_PEEK):
                    break  # the server answered
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
        sock.settimeout(stop_after)
        raw = read_all(sock)
    return parse(raw, time.monotonic() - start), sent


def silent(port: int, request: bytes, timeout: float) -> Answer:
    """Send part of a request and nothing more; the answer when the server gives up."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        raw = read_all(sock)
    return parse(raw, time.monotonic() - start)


async def test_slow_clients_are_cut_off_at_the_deadlines(relay: Relay) -> None:
    server = unsubscribe_server(relay)
    port, limits = server.port, server.limits
    head = limits.head_timeout
    half_head = f"POST /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\n".encode()
    dripped, half_body, half_header = await asyncio.gather(
        asyncio.to_thread(drip, port, head + 5),
        asyncio.to_thread(silent, port, HALF_POST, head + limits.body_timeout + 5),
        asyncio.to_thread(silent, port, half_head, head + 5),
    )
    answer, sent = dripped
    assert answer.status == 408 and head - 0.5 < answer.seconds < head + 3, answer
    assert sent > head  # it kept sending, and was cut off all the same
    assert half_header.status == 408 and half_header.seconds < head + 3
    assert half_body.status == 408 and half_body.seconds < limits.body_timeout + 3
    for each in (answer, half_body, half_header):
        assert_no_banner(each)
    await wait_until(lambda: server.connections == 0)


async def test_oversized_and_malformed_requests(relay: Relay) -> None:
    server = unsubscribe_server(relay)
    port, limits = server.port, server.limits
    big_header = (
        f"GET /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\n"
        f"Cookie: {'c' * limits.max_head_bytes}\r\n\r\n"
    ).encode()
    many_headers = (
        f"GET /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\n"
        + "".join(f"X-H{i}: v\r\n" for i in range(2000))
        + "\r\n"
    ).encode()
    # Content-Length says too much: refused before a byte of the body is sent.
    big_length = (
        f"POST /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    chunk = b"a" * 3000
    chunked = (
        f"POST /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 3
    cases = [
        (big_header, 431),
        (many_headers, 431),
        (big_length, 413),
        (chunked, 413),
        (b"HELLO THERE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET /unsubscribe/" + TOKEN.encode() + b" HTTP/1.1\r\n\r\n", 400),  # no Host
    ]
    for request, status in cases:
        answer = await asyncio.to_thread(exchange, port, request)
        assert answer.status == status, (request[:60], answer)
        assert answer.seconds < 3
        assert answer.headers["connection"] == "close"
        assert len(answer.body) < 100 and b"Traceback" not in answer.body
        assert_no_banner(answer)
    # The right request is answered by the app, without a banner either.
    post = (
        f"POST /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(ONE_CLICK)}\r\n\r\n"
    ).encode() + ONE_CLICK
    for request in (post, f"GET /unsubscribe/{TOKEN} HTTP/1.0\r\n\r\n".encode()):
        answer = await asyncio.to_thread(exchange, port, request)
        assert answer.status == 404 and b"not known" in answer.body
        assert int(answer.headers["content-length"]) == len(answer.body)
        assert_no_banner(answer)
    head = await asyncio.to_thread(get, port, f"/unsubscribe/{TOKEN}", method="HEAD")
    assert head.status == 404 and head.body == b"" and int(head.headers["content-length"]) > 0


async def test_metrics_and_health_have_no_banner_and_stop_fast(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> None:
    for listen, host in (("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")):
        config = make_config(
            tmp_path,
            sink_port=sink.port,
            dkim_key=dkim_key[0],
            database_url=database_url,
            metrics=MetricsConfig(listen=listen),
        )
        relay = Relay(config)
        await relay.start()
        try:
            assert relay.endpoint is not None
            port = relay.endpoint.port
            metrics = await asyncio.to_thread(get, port, "/metrics", host=host)
            assert metrics.status == 200 and b"relay_" in metrics.body
            health = await asyncio.to_thread(get, port, "/healthz", host=host)
            assert health.status in (200, 503) and b'"ok"' in health.body
            missing = await asyncio.to_thread(get, port, "/nothing", host=host)
            assert missing.status == 404
            for answer in (metrics, health, missing):
                assert_no_banner(answer)
        finally:
            start = time.monotonic()
            await relay.stop()
            assert time.monotonic() - start < 2


async def test_stop_is_fast_with_clients_connected(relay: Relay) -> None:
    endpoint = UnsubscribeEndpoint(relay.db, "127.0.0.1", 0)
    await asyncio.to_thread(endpoint.start)
    server = endpoint.server
    with half_sent_posts(server.port, 50) as slow:
        await wait_until(lambda: server.connections == 50)
        start = time.monotonic()
        await asyncio.to_thread(endpoint.stop)
        assert time.monotonic() - start < 0.5
        # every client sees its connection closed, without an answer
        slow[0].settimeout(5)
        assert await asyncio.to_thread(read_all, slow[0]) == b""


async def test_requests_waiting_for_a_worker_are_bounded(
    relay: Relay, database_locked: Callable[[], AbstractContextManager[None]]
) -> None:
    """With the database locked, each POST holds its worker up to
    ``database.busy_timeout``; past the bound of waiting requests, 503 at once."""
    limits = HttpLimits(workers=1, max_waiting=1, max_body_bytes=4096)
    endpoint = UnsubscribeEndpoint(relay.db, "127.0.0.1", 0, limits=limits)
    await asyncio.to_thread(endpoint.start)
    post = (
        f"POST /unsubscribe/{TOKEN} HTTP/1.1\r\nHost: relay.test\r\n"
        f"Content-Length: {len(ONE_CLICK)}\r\n\r\n"
    ).encode() + ONE_CLICK
    port = endpoint.server.port
    try:
        with database_locked():
            waiting = [asyncio.create_task(asyncio.to_thread(exchange, port, post))]
            await wait_until(lambda: endpoint.server.waiting == 1)
            waiting.append(asyncio.create_task(asyncio.to_thread(exchange, port, post)))
            await wait_until(lambda: endpoint.server.waiting == 2)
            busy = await asyncio.to_thread(exchange, port, post)
            assert busy.status == 503 and b"busy" in busy.body and busy.seconds < 1
        for answer in await asyncio.gather(*waiting):
            assert answer.status in (404, 503)  # answered by the app
            assert b"busy" not in answer.body
    finally:
        await asyncio.to_thread(endpoint.stop)
