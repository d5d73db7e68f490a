"""What does rewriting one recipient's copy cost, the full way and the fast way?

Times ``relay.message.compose.compose`` on the bench's own messages (the headers
and body of ``bench/loadgen.py``'s ``build_message``: a 4 KB text message and a
200 KB message with a genuine PDF attachment), both ways in the same run:

- full: the parsed message rewritten through the ``email`` object model,
  written out, and the result parsed again by the leak check (the only path
  before; now the fallback);
- own copy: the same, plus parsing the copy first, which a second recipient's
  copy (or a stamped message's) used to need;
- new: ``compose`` given the source bytes: the fast path where it applies (a
  header section written as bytes, the body passed on as received, or with only
  its text parts that hold an address rewritten; the leak check on the parse the
  message already had and on the rewritten parts), else its look and the full
  path.

The loadgen's messages sign off with the buyer's address, which has to be
replaced: the "as sent" lines are the messages as built, whose text part the fast
path rewrites (path "parts"; the 200 KB message's PDF is passed on as its bytes).
The "no address" lines are the same messages with the address line taken out of
the signature (path "fast": the body as received).  Each cell is the
median of ``--runs`` runs of this thread's CPU time (the machine may be shared;
the three take turns on each message); the parse of the message as received,
which the filters need anyway, is not counted except in "own copy".

    .venv/bin/python bench/compose.py [--runs 30]
"""

from __future__ import annotations

import argparse
import email
import functools
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import Pair, _body, _headers  # noqa: E402

from relay.message import mailpolicy  # noqa: E402
from relay.message.compose import Party, compose, compose_unchanged  # noqa: E402

DOMAIN = "marketplace.example.com"
PAIR = Pair(
    mail_from="buyer01@buyer.example",
    rcpt=f"s0e1l2l3e4r5t6k7@{DOMAIN}",
    from_header="Bench Buyer 1 <buyer01@buyer.example>",
    order="ORD-1",
)
SENDER = Party(
    "Bench Buyer 1 - Example Marketplace", f"b0u1y2e3r4t5k6n7@{DOMAIN}", (PAIR.mail_from,)
)
RECIPIENT = Party("Bench Shop 1", PAIR.rcpt, ("shop01@seller.example",))


@functools.cache
def body(size: str, *, address: bool) -> bytes:
    """The body of the loadgen's messages (``build_message`` is these headers and
    this body) as the relay receives it, dot-stuffing undone; without ``address``,
    the signature's line with the buyer's address is left out."""
    data = _body(PAIR, size).replace(b"\r\n..", b"\r\n.")
    if not address:
        line = f"\r\n{PAIR.mail_from}\r\n".encode()
        assert line in data
        data = data.replace(line, b"\r\n")
    return data


def received(size: str, seq: int, *, address: bool) -> bytes:
    """Message ``seq`` as received: a Message-ID of its own."""
    return _headers(seq, PAIR, "compose") + body(size, address=address)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    assert isinstance(msg, EmailMessage)
    return msg


def rewrite(msg: EmailMessage, seq: int, source: bytes | None) -> bytes:
    out = compose(
        msg,
        sender=SENDER,
        recipient=RECIPIENT,
        message_id=f"<relay-{seq}@{DOMAIN}>",
        in_reply_to=[],
        references=[],
        hostname="mx.bench",
        source=source,
    )
    return out.data


def medians_ms(runs: int, size: str, address: bool) -> tuple[float, float, float]:
    """Median milliseconds of CPU (this thread's) of the full path, the full path on
    a copy of its own, and the fast path.  The three take turns on each message,
    and each message has a Message-ID of its own (no header comes from a cache the
    previous run filled)."""
    times: list[list[float]] = [[], [], []]
    for seq in range(runs):
        raw = received(size, seq, address=address)
        for kind, job in enumerate((full, full_own_copy, fast)):
            times[kind].append(job(raw, seq))
    old, own, new = (statistics.median(t) * 1000 for t in times)
    return old, own, new


def full(raw: bytes, seq: int) -> float:
    msg = parse(raw)
    began = time.thread_time()
    rewrite(msg, seq, None)
    return time.thread_time() - began


def full_own_copy(raw: bytes, seq: int) -> float:
    began = time.thread_time()
    rewrite(parse(raw), seq, None)
    return time.thread_time() - began


def fast(raw: bytes, seq: int) -> float:
    msg = parse(raw)
    began = time.thread_time()
    rewrite(msg, seq, raw)
    return time.thread_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    for size in ("4k", "200k"):  # warm up: imports, compiled patterns, caches of constants
        for address in (True, False):
            raw = received(size, 0, address=address)
            rewrite(parse(raw), 0, None)
            rewrite(parse(raw), 0, raw)
    print(f"compose, one copy: CPU ms, median of {args.runs} runs\n")
    print(
        f"{'message':<30} {'bytes':>8} {'path':>6} {'full':>7} {'own copy':>9}"
        f" {'new':>7} {'full/new':>9}"
    )
    for size, label in (("4k", "4 KB text"), ("200k", "200 KB with a PDF")):
        for address in (True, False):
            raw = received(size, 0, address=address)
            out = compose_unchanged(
                parse(raw),
                raw,
                sender=SENDER,
                recipient=RECIPIENT,
                message_id=f"<relay-0@{DOMAIN}>",
                in_reply_to=[],
                references=[],
                hostname="mx.bench",
            )
            path = "full" if out is None else "parts"
            if out is not None and out.data.endswith(raw.partition(b"\r\n\r\n")[2]):
                path = "fast"  # the body as received
            old, own, new = medians_ms(args.runs, size, address)
            name = f"{label}, {'as sent' if address else 'no address'}"
            print(
                f"{name:<30} {len(raw):>8,} {path:>6} {old:>7.2f}"
                f" {own:>9.2f} {new:>7.2f} {old / new:>9.1f}"
            )


if __name__ == "__main__":
    main()
