"""A cheap SMTP sink for the benchmark: accepts everything, counts what arrives.

It runs in its own process (started by ``bench/run.py``) and is the smarthost of
the Postfix and relay targets.  It reads DATA in whole chunks up to the
``CRLF.CRLF`` terminator (no per-line work), finds the ``X-Bench-Seq`` marker in
the header section and records, per marker, how often it arrived and when the
first copy came, so that duplicates and missing messages show.

Protocol with the parent, one JSON object per line:

- stdout: ``{"event": "ready", "port": P}`` once listening;
  ``{"event": "done", ...status}`` when ``--expect`` distinct markers arrived;
  ``{"event": "status", ...}`` in answer to ``status``.
- stdin: ``status``, ``expect N`` (set the count that triggers ``done``),
  ``dump PATH`` (write every seen marker with its count, answers ``dumped``),
  ``quit``.  End of file on stdin (the parent died) stops the sink too.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes).

    python bench/sink.py [--port 0] [--expect N] [--sample FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from typing import Any

MARKER = re.compile(rb"^X-Bench-Seq:[ \t]*(\d+)", re.IGNORECASE | re.MULTILINE)
TERMINATOR = b"\r\n.\r\n"
MAX_LINE = 1 << 16
EHLO_REPLY = (
    b"250-sink.bench.example\r\n"
    b"250-PIPELINING\r\n"
    b"250-8BITMIME\r\n"
    b"250-SIZE 100000000\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)


class Stats:
    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.seen: dict[int, int] = {}
        self.messages = 0
        self.unmarked = 0
        self.bytes = 0
        self.connections = 0
        self.first: float | None = None
        self.last_new: float | None = None
        self.nth: float | None = None
        self.done_sent = False
        self.sample_path: str | None = None
        """Where to write the first message received (then None)."""

    def record(self, seq: int | None, size: int) -> None:
        now = time.monotonic()
        self.messages += 1
        self.bytes += size
        if self.first is None:
            self.first = now
        if seq is None:
            self.unmarked += 1
            return
        count = self.seen.get(seq, 0)
        self.seen[seq] = count + 1
        if count == 0:
            self.last_new = now
            if self.expect and len(self.seen) == self.expect:
                self.nth = now
        self.check_done()

    def check_done(self) -> None:
        if self.expect and not self.done_sent and len(self.seen) >= self.expect:
            self.done_sent = True
            emit({"event": "done", **self.status()})

    def status(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "distinct": len(self.seen),
            "duplicates": self.messages - self.unmarked - len(self.seen),
            "unmarked": self.unmarked,
            "bytes": self.bytes,
            "connections": self.connections,
            "first": self.first,
            "last_new": self.last_new,
            "nth": self.nth,
            "expect": self.expect,
            "now": time.monotonic(),
        }


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class SinkProtocol(asyncio.Protocol):
    """One SMTP session; commands may be pipelined, DATA is scanned chunk-wise."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buf = bytearray()
        self.in_data = False
        self.scanned = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1
        transport.write(b"220 sink.bench.example ESMTP bench sink\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    def _reply(self, text: bytes) -> None:
        assert self.transport is not None
        self.transport.write(text)

    def _process(self) -> None:
        buf = self.buf
        while self.transport is not None and not self.transport.is_closing():
            if self.in_data:
                if self.scanned == 0 and len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                    return  # maybe an empty message: wait for more
                if self.scanned == 0 and buf.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    i = buf.find(TERMINATOR, max(0, self.scanned - len(TERMINATOR) + 1))
                    if i < 0:
                        self.scanned = max(len(buf), 1)
                        return
                    end, skip = i + 2, i + len(TERMINATOR)
                header_end = buf.find(b"\r\n\r\n", 0, end)
                match = MARKER.search(buf, 0, end if header_end < 0 else header_end)
                if self.stats.sample_path is not None:
                    with open(self.stats.sample_path, "wb") as fh:
                        fh.write(buf[:end])
                    self.stats.sample_path = None
                self.stats.record(int(match.group(1)) if match else None, end)
                del buf[:skip]
                self.in_data = False
                self.scanned = 0
                self._reply(b"250 2.0.0 Ok: queued\r\n")
                continue
            i = buf.find(b"\r\n")
            if i < 0:
                if len(buf) > MAX_LINE:
                    self._reply(b"500 5.5.2 Line too long\r\n")
                    assert self.transport is not None
                    self.transport.close()
                return
            verb = bytes(buf[: min(i, 4)]).upper()
            del buf[: i + 2]
            if verb == b"EHLO":
                self._reply(EHLO_REPLY)
            elif verb == b"HELO":
                self._reply(b"250 sink.bench.example\r\n")
            elif verb == b"MAIL":
                self._reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                self._reply(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.scanned = 0
                self._reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb in (b"RSET", b"NOOP"):
                self._reply(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                self._reply(b"221 2.0.0 Bye\r\n")
                assert self.transport is not None
                self.transport.close()
                return
            else:
                self._reply(b"502 5.5.2 Error: command not recognized\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def control(stats: Stats, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        cmd, _, arg = line.partition(" ")
        if cmd == "status":
            emit({"event": "status", **stats.status()})
        elif cmd == "expect":
            stats.expect = int(arg)
            stats.done_sent = False
            if stats.expect and len(stats.seen) >= stats.expect and stats.nth is None:
                stats.nth = stats.last_new
            stats.check_done()
        elif cmd == "dump":
            with open(arg, "w", encoding="utf-8") as fh:
                json.dump({str(k): v for k, v in stats.seen.items()}, fh)
            emit({"event": "dumped", "path": arg})
    stop.set()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--sample", help="write the first message received to this file")
    args = parser.parse_args()
    stats = Stats(args.expect)
    stats.sample_path = args.sample
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(stats), args.host, args.port, backlog=1024
    )
    emit({"event": "ready", "port": server.sockets[0].getsockname()[1]})
    stop = asyncio.Event()
    task = asyncio.create_task(control(stats, stop))
    await stop.wait()
    task.cancel()
    server.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
