"""How many webhook events per second does one relay deliver?

Per run: a fresh database (SQLite in a temporary directory, or a new PostgreSQL
database), one endpoint registered for ``message.delivered`` and EVENTS events
written to the outbox beforehand with the relay's own ``emit``; then
``relay serve`` starts and sends them, signed, to a receiver in a process of
its own (uvicorn, answering 204 and counting distinct event ids).  Measured:
events per second and the relay process's CPU per event from the receiver's
first event to its last, and the rate from the relay's start (start-up
included).  Every event must arrive, each id once
(the receiver counts duplicates), and the outbox must be empty at the end.

    .venv/bin/python bench/webhooks.py [--events 5000] [--runs 3] [--concurrency 8]
        [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
RELAY = Path(sys.executable).with_name("relay")
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from fresh import free_port, fresh_database  # noqa: E402

from relay import campaigns  # noqa: E402
from relay.core.config import DatabaseConfig  # noqa: E402
from relay.core.scopes import Scope  # noqa: E402
from relay.storage.db import Database  # noqa: E402
from relay.storage.events import EventType, emit  # noqa: E402
from relay.webhooks import endpoints  # noqa: E402

RECEIVER = """
import sys, uvicorn
seen, requests = set(), [0]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "POST":
        requests[0] += 1
        start = body.index(b'"id":"') + 6
        seen.add(body[start:body.index(b'"', start)])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = ('{"distinct": %d, "requests": %d}' % (len(seen), requests[0])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": answer})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prefill(url: str, hook: str, events: int) -> None:
    """The endpoint, then ``events`` events, written as the relay writes them."""
    campaigns.install()
    db = Database(DatabaseConfig(url=url))
    db.migrate()
    db.call(
        lambda s: endpoints.register(
            s, scope=Scope.parse("admin"), url=hook, events=[EventType.MESSAGE_DELIVERED]
        )
    )
    for start in range(0, events, 1000):

        def batch(s: object, start: int = start) -> None:
            for n in range(start, min(events, start + 1000)):
                data = {"message_id": n, "direction": "buyer_to_seller", "delivery_id": n}
                emit(s, EventType.MESSAGE_DELIVERED, data, conversation_id=1)  # type: ignore[arg-type]

        db.call(batch)
    db.dispose()


def counts(port: int) -> dict[str, int]:
    got: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()
    return got


def one_run(url: str, workdir: Path, events: int, concurrency: int) -> dict[str, float]:
    hook_port, smtp_port = free_port(), free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(hook_port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                counts(hook_port)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the receiver did not start") from None
                time.sleep(0.1)
        prefill(url, f"http://127.0.0.1:{hook_port}/hooks", events)
        config = workdir / "relay.json"
        config.write_text(
            json.dumps(
                {
                    "smtp": {"port": smtp_port, "pid_file": str(workdir / "relay.pid")},
                    "database": {"url": url},
                    "archive": {"path": str(workdir / "archive")},
                    "delivery": {"maildir": str(workdir / "outbox")},
                    "dkim": {"private_key": str(workdir / "dkim.key")},
                    "filters": {"rules": str(BENCH.parent / "config" / "filters.yaml")},
                    "api": {"listen": None},
                    "metrics": {"listen": None},
                    "campaigns": {"dispatch": False, "unsubscribe": {"listen": "127.0.0.1:0"}},
                    "webhooks": {"concurrency": concurrency, "poll_interval": 0.2},
                    "logging": {"level": "warning"},
                }
            )
        )
        log = (workdir / "relay.log").open("wb")
        started = time.perf_counter()
        relay = subprocess.Popen(
            [str(RELAY), "serve", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 600
            first: tuple[float, float, int] | None = None
            while (got := counts(hook_port))["distinct"] < events:
                if time.monotonic() > deadline or relay.poll() is not None:
                    raise RuntimeError(f"{got} of {events}: {(workdir / 'relay.log').read_text()}")
                if first is None and got["distinct"]:
                    first = (time.perf_counter(), cpu_seconds(relay.pid), got["distinct"])
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(relay.pid)
            assert first is not None
            steady_rate = (events - first[2]) / (time.perf_counter() - first[0])
            steady_cpu = (cpu - first[1]) / (events - first[2])
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(30)
            log.close()
        final = counts(hook_port)
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(10)
    if final["distinct"] != events:
        raise RuntimeError(f"{final['distinct']} distinct events of {events}")
    return {
        "per_second": steady_rate,
        "cpu_ms": 1000 * steady_cpu,
        "with_start_per_second": events / elapsed,
        "duplicates": final["requests"] - final["distinct"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        with (
            tempfile.TemporaryDirectory(prefix="relay-bench-webhooks-") as tmp,
            fresh_database(args.database, Path(tmp), f"relay_bench_webhooks_{run}") as url,
        ):
            result = one_run(url, Path(tmp), args.events, args.concurrency)
        results.append(result)
        print(
            f"run {run + 1}: {result['per_second']:.0f} events/s once sending"
            f" ({result['with_start_per_second']:.0f} from the relay's start),"
            f" {result['cpu_ms']:.2f} ms CPU per event,"
            f" {result['duplicates']:.0f} sent twice"
        )
    print(f"median of {args.runs} ({args.database}, {args.events} events):")
    for key in ("per_second", "with_start_per_second", "cpu_ms", "duplicates"):
        print(f"  {key}: {statistics.median(r[key] for r in results):.2f}")


if __name__ == "__main__":
    main()
