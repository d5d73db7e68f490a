"""What does the filter stage cost per message, and does it stall the event loop?

Runs the shipped rules (``config/filters.yaml``) over two seller messages: a 4 KB
text message (plain and HTML, a tracking link, Vietnamese text) and a 5 MB
message with a genuine PDF attachment.  For each it reports the median time of
the filter stage on the parsed message (building the message view, every rule,
libmagic) and, for scale, of parsing the same bytes, and the ratio of the two,
both measured in the same runs.  Last, it runs the 5 MB message's parsing and
filtering in a worker thread, as the relay does, while a probe samples the event
loop every millisecond, and reports how late the loop ran.

    .venv/bin/python bench/filters.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.filters import Role, RuleSet, evaluate, load_rules  # noqa: E402
from tests import filegen  # noqa: E402


def text_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@seller.example>"
    msg["To"] = "b1x2@marketplace.example.com"
    msg["Subject"] = "Đơn hàng của bạn đã được gửi"
    line = (
        "Xin chào, đơn hàng của bạn đã được gửi đi hôm nay. Bạn có thể theo dõi tại "
        "https://www.ups.com/track?n=1Z999 — cảm ơn bạn đã mua hàng!\n"
    )
    body = line * (2000 // len(line.encode()))
    msg.set_content(body)
    msg.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
    return msg.as_bytes()


def pdf_message(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@seller.example>"
    msg["To"] = "b1x2@marketplace.example.com"
    msg["Subject"] = "Your invoice"
    msg.set_content("Please find the invoice attached.\n")
    msg.add_attachment(
        filegen.pdf_of_size(size), maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    return msg.as_bytes()


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def timed(raw: bytes, rules: RuleSet, runs: int) -> tuple[float, float]:
    """Median seconds of (parsing, the filter stage on the parsed message)."""
    parse_s: list[float] = []
    filter_s: list[float] = []
    for _ in range(runs):
        began = time.perf_counter()
        msg = parse(raw)
        parsed = time.perf_counter()
        evaluate(rules, msg, Role.SELLER)
        done = time.perf_counter()
        parse_s.append(parsed - began)
        filter_s.append(done - parsed)
    return statistics.median(parse_s), statistics.median(filter_s)


async def loop_lag(job: object, seconds: float) -> tuple[float, float]:
    """(p99, max) lateness in ms of a 1 ms timer while ``job`` runs in a thread."""
    late: list[float] = []
    stop = time.monotonic() + seconds

    async def probe() -> None:
        while time.monotonic() < stop:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append((time.perf_counter() - began - 0.001) * 1000)

    def work() -> None:
        while time.monotonic() < stop:
            job()  # type: ignore[operator]

    await asyncio.gather(probe(), asyncio.to_thread(work))
    late.sort()
    return late[int(len(late) * 0.99)], late[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rules = load_rules(ROOT / "config" / "filters.yaml")
    print(f"{len(rules.rules)} rules from config/filters.yaml; median of {args.runs} runs\n")
    print(f"{'message':<28} {'bytes':>10} {'filters ms':>11} {'parse ms':>9} {'ratio':>6}")
    messages = (("4 KB text + HTML", text_message()), ("5 MB with a PDF", pdf_message(5_000_000)))
    for name, raw in messages:
        parse_s, filter_s = timed(raw, rules, args.runs)
        print(
            f"{name:<28} {len(raw):>10,} {filter_s * 1000:>11.2f} {parse_s * 1000:>9.2f}"
            f" {filter_s / parse_s:>6.2f}"
        )
    big = pdf_message(5_000_000)
    parsed = parse(big)
    print("\nevent loop lateness (ms) while a thread works on the 5 MB message:")
    jobs = {
        "idle (no thread work)": lambda: time.sleep(0.01),
        "parse only": lambda: parse(big),
        "filters only (parsed once)": lambda: evaluate(rules, parsed, Role.SELLER),
    }
    for name, job in jobs.items():
        p99, worst = asyncio.run(loop_lag(job, 3.0))
        print(f"  {name:<28} p99 {p99:5.1f}   max {worst:5.1f}")


if __name__ == "__main__":
    main()
