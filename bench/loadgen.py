"""The benchmark's load generator: N SMTP sessions sending M messages, cheaply.

Raw asyncio streams (no SMTP library), so that the client costs the same for
every target.  Two shapes of load:

- ``session`` (the default): each session connects once, says EHLO and then, per
  message, RSET (after the first), MAIL, RCPT, DATA, the message and the final
  ``.``;
- ``connection``: every message pays a whole SMTP session of its own: connect,
  greeting, EHLO, MAIL, RCPT, DATA, the message, ``.``, QUIT, close (what
  Postfix's ``smtp-source`` does, and what most mail clients and MTAs do).

The accept latency is the time from writing the final ``.`` to reading the reply.
Any reply other than the expected one is counted by stage and code, and the
message is not retried.  A dropped connection is reopened.

Messages are built here (``build_message``), identical for every target: message
``seq`` goes to party pair ``seq % len(pairs)``; its header carries
``X-Bench-Seq: <seq>`` for the sink to count and a unique Message-ID.

Protocol with the parent (``bench/run.py``): after building the messages and
opening every session it prints ``{"event": "ready"}`` and waits for ``go`` on
stdin; it prints ``{"event": "progress", ...}`` every ``--progress`` accepted
messages and writes the result to ``--out`` (JSON) before exiting.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes).

    python bench/loadgen.py --port P --pairs PAIRS.json --out RESULT.json \
        [--sessions 20] [--messages 2000] [--size 4k|200k] [--shape session|connection]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SIZES = {"4k": 4 * 1024, "200k": 200 * 1024}
DOMAIN = "marketplace.example.com"

PARAGRAPHS = [
    "Hello, thank you for the quick reply about my order. I have a few more "
    "questions before you send it, and I hope they are not too much trouble.",
    "Could you tell me whether the blue ceramic bowl comes in a slightly larger "
    "size? The one in the photos looks perfect, but I would like to serve soup in it "
    "for four people, and I am not sure the current one is deep enough.",
    "Also, my apartment building has a front desk that accepts parcels until six in "
    "the evening. If the courier comes later, please ask them to leave a note so "
    "that I can pick the parcel up at the post office the next morning.",
    "Xin chào, tôi muốn hỏi thêm về thời gian giao hàng. Tôi sẽ đi công tác từ thứ "
    "Sáu, nên nếu có thể, xin vui lòng gửi hàng trước thứ Năm. Cảm ơn bạn rất nhiều.",
    "Salamat po sa mabilis na sagot. Pakibalot po nang mabuti ang mangkok dahil "
    "regalo ko ito sa aking ina sa kanyang kaarawan sa susunod na linggo.",
    "If the engraving takes an extra day, that is fine with me. Please write the "
    "name exactly as I typed it in the order notes, with the accent on the e.",
    "One last thing: the invoice should be made out to my company, with the same "
    "postal address as the delivery. I attached the details I have, if needed.",
]


@dataclass(frozen=True)
class Pair:
    """One buyer writing to one seller token."""

    mail_from: str
    rcpt: str
    from_header: str
    order: str

    @staticmethod
    def load(path: Path) -> list[Pair]:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Pair(**item) for item in data]


def _text(target: int, signature: str) -> str:
    out: list[str] = []
    size = len(signature)
    i = 0
    while size < target:
        para = textwrap.fill(PARAGRAPHS[i % len(PARAGRAPHS)], 72)
        out.append(para)
        size += len(para.encode()) + 2
        i += 1
    return "\n\n".join(out) + "\n\n" + signature


def _pdf(size: int) -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.filegen import pdf_of_size

    return pdf_of_size(size)


def _body(pair: Pair, size: str) -> bytes:
    """Everything after the per-message headers, CRLF line ends, dot-stuffed."""
    target = SIZES[size]
    signature = f"-- \n{pair.from_header.split(' <')[0]}\n{pair.mail_from}\nOrder {pair.order}\n"
    msg = EmailMessage(policy=SMTP)
    if size == "4k":
        msg.set_content(_text(target - 460, signature), cte="8bit")
    else:
        msg.set_content(_text(3000, signature), cte="8bit")
        # base64 grows the PDF by 4/3, plus CRLF every 76 characters
        pdf_size = int((target - 4400) * 3 / 4 * 76 / 78)
        msg.add_attachment(
            _pdf(pdf_size), maintype="application", subtype="pdf", filename="company-details.pdf"
        )
        msg.set_boundary(f"bench-boundary-{pair.order}")  # the same bytes in every run
    body = msg.as_bytes()
    if body.startswith(b"."):
        body = b"." + body
    body = body.replace(b"\r\n.", b"\r\n..")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def _headers(seq: int, pair: Pair, run_id: str) -> bytes:
    return (
        f"From: {pair.from_header}\r\n"
        f"To: <{pair.rcpt}>\r\n"
        f"Subject: Question about order {pair.order}\r\n"
        "Date: Mon, 24 Nov 2025 09:30:00 +0700\r\n"
        f"Message-ID: <{seq}.{run_id}@buyer.example>\r\n"
        f"X-Bench-Seq: {seq}\r\n"
    ).encode()


class Messages:
    """Message ``seq`` as bytes: per-message headers + its pair's prebuilt body."""

    def __init__(self, pairs: list[Pair], size: str, run_id: str) -> None:
        self.pairs = pairs
        self.run_id = run_id
        self.bodies = [_body(p, size) for p in pairs]

    def get(self, seq: int) -> tuple[Pair, bytes, bytes]:
        k = seq % len(self.pairs)
        pair = self.pairs[k]
        return pair, _headers(seq, pair, self.run_id), self.bodies[k]


def build_message(pair: Pair, size: str, seq: int = 0, run_id: str = "x") -> bytes:
    """The whole message as sent (dot-stuffed, without the final ``.``)."""
    return _headers(seq, pair, run_id) + _body(pair, size)


class ReplyError(Exception):
    def __init__(self, stage: str, code: int, text: str) -> None:
        super().__init__(f"{stage}: {text}")
        self.stage = stage
        self.code = code
        self.text = text


@dataclass
class Result:
    t_start: float = 0.0
    t_last_accept: float = 0.0
    t_end: float = 0.0
    accepted: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    accepted_seqs: list[int] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    failure_samples: list[str] = field(default_factory=list)
    reconnects: int = 0
    timed_out: bool = False
    message_bytes: int = 0

    def fail(self, key: str, sample: str) -> None:
        self.failed += 1
        self.failures[key] = self.failures.get(key, 0) + 1
        if len(self.failure_samples) < 10:
            self.failure_samples.append(sample)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Session:
    def __init__(self, host: str, port: int, reply_timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = reply_timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.fresh = True

    async def connect(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20), self.timeout
        )
        self.reader, self.writer = reader, writer
        transport = writer.transport
        assert isinstance(transport, asyncio.WriteTransport)
        transport.set_write_buffer_limits(high=0)  # drain() waits until the kernel has it
        self.fresh = True
        await self.expect("greeting", 220)
        await self.command("EHLO", b"EHLO loadgen.bench.example\r\n", 250)

    async def reply(self) -> tuple[int, str]:
        assert self.reader is not None
        lines: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not line:
                raise ConnectionError("connection closed by the server")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            code = 0
        text = " / ".join(x.decode("utf-8", "replace").strip() for x in lines)
        return code, text

    async def expect(self, stage: str, code: int) -> None:
        got, text = await self.reply()
        if got != code:
            raise ReplyError(stage, got, text)

    async def command(self, stage: str, line: bytes, code: int) -> None:
        assert self.writer is not None
        self.writer.write(line)
        await self.expect(stage, code)

    async def send(self, mail_from: str, rcpt: str, header: bytes, body: bytes) -> float:
        """One transaction; returns the accept latency in seconds."""
        assert self.writer is not None
        if not self.fresh:
            await self.command("RSET", b"RSET\r\n", 250)
        self.fresh = False
        await self.command("MAIL", f"MAIL FROM:<{mail_from}>\r\n".encode(), 250)
        await self.command("RCPT", f"RCPT TO:<{rcpt}>\r\n".encode(), 250)
        await self.command("DATA", b"DATA\r\n", 354)
        self.writer.write(header)
        self.writer.write(body)
        await asyncio.wait_for(self.writer.drain(), self.timeout)
        t0 = time.monotonic()
        self.writer.write(b".\r\n")
        await self.expect("end of data", 250)
        return time.monotonic() - t0

    async def close(self, quit_: bool = True) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is None:
            return
        try:
            if quit_:
                writer.write(b"QUIT\r\n")
                await asyncio.wait_for(writer.drain(), 5)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (OSError, TimeoutError):
            pass


async def run(args: argparse.Namespace) -> Result:
    pairs = Pair.load(Path(args.pairs))
    messages = Messages(pairs, args.size, args.run_id)
    result = Result()
    result.message_bytes = len(b"".join(messages.get(0)[1:]))
    ports = [args.port, *args.also_port]  # several relays: the sessions take turns
    sessions = [
        Session(args.host, ports[i % len(ports)], args.reply_timeout) for i in range(args.sessions)
    ]
    if args.shape == "session":
        await asyncio.gather(*(s.connect() for s in sessions))

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    emit({"event": "ready", "message_bytes": result.message_bytes})
    if (await stdin.readline()).strip() != b"go":
        raise SystemExit("no go from the parent")

    next_seq = 0
    deadline = time.monotonic() + args.timeout
    progress_every = args.progress

    def take() -> int | None:
        nonlocal next_seq
        if next_seq >= args.messages:
            return None
        if time.monotonic() > deadline:
            result.timed_out = True
            return None
        seq = next_seq
        next_seq += 1
        return seq

    per_message = args.shape == "connection"

    async def worker(session: Session) -> None:
        connect_failures = 0
        while (seq := take()) is not None:
            pair, header, body = messages.get(seq)
            try:
                if session.writer is None:
                    if not per_message:
                        result.reconnects += 1
                    await session.connect()
                latency = await session.send(pair.mail_from, pair.rcpt, header, body)
            except ReplyError as exc:
                result.fail(f"{exc.stage} {exc.code}", str(exc))
                if exc.code == 421 or exc.stage == "greeting":
                    await session.close(quit_=False)
                elif per_message:
                    await session.close()
                continue
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                result.fail(f"connection {type(exc).__name__}", f"seq {seq}: {exc!r}")
                await session.close(quit_=False)
                connect_failures += 1
                if connect_failures >= 5:
                    return
                await asyncio.sleep(0.2 * connect_failures)
                continue
            connect_failures = 0
            now = time.monotonic()
            result.accepted += 1
            result.t_last_accept = now
            result.latencies_ms.append(latency * 1000)
            result.accepted_seqs.append(seq)
            if per_message:
                await session.close()
            if progress_every and result.accepted % progress_every == 0:
                emit(
                    {
                        "event": "progress",
                        "accepted": result.accepted,
                        "failed": result.failed,
                        "t": now,
                    }
                )
        await session.close()

    result.t_start = time.monotonic()
    await asyncio.gather(*(worker(s) for s in sessions))
    result.t_end = time.monotonic()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--also-port",
        type=int,
        action="append",
        default=[],
        help="another server of the same target: sessions are spread over all ports",
    )
    parser.add_argument("--pairs", required=True, help="JSON list of Pair fields")
    parser.add_argument("--out", required=True, help="where to write the result (JSON)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", choices=sorted(SIZES), default="4k")
    parser.add_argument(
        "--shape",
        choices=["session", "connection"],
        default="session",
        help="session: many messages per SMTP session; connection: a new session per message",
    )
    parser.add_argument("--run-id", default="bench")
    parser.add_argument("--timeout", type=float, default=3600, help="stop sending after this")
    parser.add_argument("--reply-timeout", type=float, default=120)
    parser.add_argument("--progress", type=int, default=0, help="report every N accepted")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result.__dict__), encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
