"""How long does the relay's event loop stall while it accepts and delivers mail?

Starts the relay in this process (SQLite and a Maildir in a temporary directory),
samples the event loop's lateness every millisecond, and sends MESSAGES messages
of each size over SESSIONS concurrent SMTP sessions on loopback.  Prints, per
size: accepted messages/s, accept latency p50/p90/p99, and the loop's longest
stall and 99th-percentile lateness.  A stall of a few milliseconds means work
that should be in a thread is on the loop.

    .venv/bin/python bench/loop_lag.py [--messages 200] [--sessions 8] [--runs 3]
        [--freeze both|on|off]

``--freeze`` compares the relay with and without ``gc.freeze()`` after its start
(what ``relay serve`` does, ``relay.app.settle_heap``), alternating the two in
each round, and reports the garbage collector's pauses: how many full (gen 2)
collections ran and the longest of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from relay.app import Relay, settle_heap
from relay.core.config import (
    ArchiveConfig,
    DatabaseConfig,
    DeliveryConfig,
    DkimConfig,
    FiltersConfig,
    LimitsConfig,
    RelayConfig,
    SmtpConfig,
)
from relay.storage import directory


def message(frm: str, to: str, size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = to
    msg["Subject"] = "Benchmark"
    line = "Hello, this is a line of benchmark text about an order and its delivery.\n"
    signature = f"-- \nA buyer\n{frm}\n"
    msg.set_content(line * max(1, (size - len(signature)) // len(line)) + signature)
    if size > 50_000:
        msg.add_attachment(
            os.urandom(size // 2), maintype="application", subtype="pdf", filename="invoice.pdf"
        )
    return msg.as_bytes()


class GcTimer:
    """Durations of the collector's runs, by generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)


class LagMonitor:
    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.samples.append(time.perf_counter() - start - 0.001)

    def start(self) -> None:
        self.samples.clear()
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def one_run(
    tmp: Path, size: int, messages: int, sessions: int, *, freeze: bool = False
) -> dict[str, float]:
    (tmp / "none.yaml").write_text("rules: []\n", encoding="utf-8")
    config = RelayConfig(
        smtp=SmtpConfig(port=0, hostname="mx.bench"),
        database=DatabaseConfig(url=f"sqlite:///{tmp / 'relay.db'}"),
        archive=ArchiveConfig(path=tmp / "archive"),
        delivery=DeliveryConfig(mode="maildir", maildir=tmp / "outbox", poll_interval=0.5),
        filters=FiltersConfig(rules=tmp / "none.yaml"),
        dkim=DkimConfig(private_key=tmp / "dkim.key"),
        # one sender and one conversation send everything: lift the abuse limits
        limits=LimitsConfig(
            messages_per_sender=10**9,
            messages_per_conversation=10**9,
            connections_per_ip=10**9,
        ),
    )
    relay = Relay(config)
    await relay.start()
    seller_token = relay.db.call(lambda s: _setup(s))
    data = message("buyer@bench.example", seller_token, size)
    if freeze:
        settle_heap()
    timer = GcTimer()
    gc.callbacks.append(timer)
    monitor = LagMonitor()
    monitor.start()
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(messages):
        queue.put_nowait(i)

    async def session() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=60)
        async with client:
            while not queue.empty():
                queue.get_nowait()
                t0 = time.perf_counter()
                await client.sendmail("buyer@bench.example", [seller_token], data)
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    elapsed = time.perf_counter() - t0
    outbox = tmp / "outbox" / "new"
    while len(list(outbox.iterdir()) if outbox.exists() else []) < messages:
        await asyncio.sleep(0.05)
    delivered_elapsed = time.perf_counter() - t0
    monitor.stop()
    gc.callbacks.remove(timer)
    await relay.stop()
    gc.unfreeze()
    full = timer.pauses[2]
    return {
        "gc_full_runs": len(full),
        "gc_full_max_ms": max(full, default=0.0) * 1000,
        "gc_all_ms": sum(sum(p) for p in timer.pauses.values()) * 1000,
        "accepted_per_s": messages / elapsed,
        "delivered_per_s": messages / delivered_elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p90_ms": pct(latencies, 90) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "loop_max_stall_ms": max(monitor.samples) * 1000,
        "loop_p99_lag_ms": pct(monitor.samples, 99) * 1000,
    }


def _setup(session: object) -> str:
    from sqlmodel import Session

    assert isinstance(session, Session)
    seller = directory.add_seller(session, name="Bench", emails=["shop@bench.example"])
    assert seller.id is not None
    _order, conv = directory.add_order(
        session,
        "B-1",
        buyer_email="buyer@bench.example",
        buyer_name="Bench Buyer",
        seller_id=seller.id,
    )
    return f"{conv.seller_token}@marketplace.example.com"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--freeze", choices=["both", "on", "off"], default="off")
    args = parser.parse_args()
    variants = {"both": [False, True], "on": [True], "off": [False]}[args.freeze]
    for label, size in (("4 KB text", 4_000), ("200 KB with PDF", 200_000)):
        runs: dict[bool, list[dict[str, float]]] = {v: [] for v in variants}
        for rnd in range(args.runs):
            order = variants if rnd % 2 == 0 else variants[::-1]
            for freeze in order:
                with tempfile.TemporaryDirectory() as tmp:
                    runs[freeze].append(
                        await one_run(Path(tmp), size, args.messages, args.sessions, freeze=freeze)
                    )
        print(
            f"{label}: median of {args.runs} runs, {args.messages} messages,"
            f" {args.sessions} sessions"
        )
        keys = list(runs[variants[0]][0])
        print(
            f"  {'':>18}  " + "  ".join(f"{'freeze' if v else 'no freeze':>10}" for v in variants)
        )
        for key in keys:
            cells = "  ".join(
                f"{statistics.median(r[key] for r in runs[v]):10.1f}" for v in variants
            )
            print(f"  {key:>18}: {cells}")


if __name__ == "__main__":
    asyncio.run(main())
