"""How many orders per second does the HTTP API create, and how long does one take?

Starts ``relay api`` as a process of its own on a fresh database (SQLite in a
temporary directory, or a fresh PostgreSQL database), makes an admin key and
SELLERS sellers with the ``relay`` command, then CLIENTS concurrent clients
(one keep-alive connection each, in this process) create ORDERS orders with
``POST /api/v1/orders``, every one a new buyer (a new conversation and two
tokens).  Per run: orders per second, latency p50/p90/p99, the relay process's
CPU per order; then the medians.  Every answer must be a 201 with both tokens,
and the database must hold exactly ORDERS orders at the end.

    .venv/bin/python bench/api.py [--orders 3000] [--clients 50] [--runs 3] [--database postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RELAY = Path(sys.executable).with_name("relay")
sys.path.insert(0, str(BENCH))

from fresh import free_port, fresh_database  # noqa: E402


def relay(config: Path, *args: str) -> Any:
    out = subprocess.run(
        [str(RELAY), "-c", str(config), *args, "--json"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def load(url: str, key: str, sellers: list[int], orders: int, clients: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(orders))
    headers = {"Authorization": f"Bearer {key}"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            for n in counter:
                body = {
                    "order_id": f"B-{n}",
                    "buyer_email": f"buyer{n}@bench.example",
                    "buyer_name": f"Buyer {n}",
                    "seller_id": sellers[n % len(sellers)],
                }
                started = time.perf_counter()
                answer = await http.post("/orders", json=body)
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 201 or "seller_token" not in answer.json():
                    raise RuntimeError(f"order {n}: {answer.status_code} {answer.text}")

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def one_run(url: str, workdir: Path, orders: int, clients: int, sellers: int) -> dict[str, float]:
    port = free_port()
    config = workdir / "relay.json"
    config.write_text(
        json.dumps(
            {
                "database": {"url": url},
                "archive": {"path": str(workdir / "archive")},
                "api": {"listen": f"127.0.0.1:{port}", "requests_per_minute": 1_000_000},
                "logging": {"level": "warning"},
            }
        )
    )
    key = relay(config, "api-key", "create", "--scope", "admin")["key"]
    ids = [
        relay(config, "seller", "add", "--name", f"Shop {i}", "--email", f"s{i}@shops.example")[
            "seller_id"
        ]
        for i in range(sellers)
    ]
    log = (workdir / "api.log").open("wb")
    proc = subprocess.Popen(
        [str(RELAY), "api", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"relay api did not start: {(workdir / 'api.log').read_text()}")
            time.sleep(0.1)
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        latencies = asyncio.run(load(base, key, ids, orders, clients))
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(sqlalchemy.text("SELECT count(*) FROM orders")).scalar()
    engine.dispose()
    if stored != orders:
        raise RuntimeError(f"{stored} orders stored, {orders} created")
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "per_second": orders / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "cpu_ms": cpu * 1000 / orders,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sellers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        with (
            tempfile.TemporaryDirectory(prefix="relay-bench-api-") as tmp,
            fresh_database(args.database, Path(tmp), f"relay_bench_api_{run}") as url,
        ):
            result = one_run(url, Path(tmp), args.orders, args.clients, args.sellers)
        results.append(result)
        print(
            f"run {run + 1}: {result['per_second']:.0f} orders/s, p50 {result['p50_ms']:.1f} ms,"
            f" p90 {result['p90_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
            f" {result['cpu_ms']:.2f} ms CPU per order"
        )
    print(f"median of {args.runs} ({args.database}, {args.clients} clients, {args.orders} orders):")
    for key in ("per_second", "p50_ms", "p90_ms", "p99_ms", "cpu_ms"):
        print(f"  {key}: {statistics.median(r[key] for r in results):.2f}")


if __name__ == "__main__":
    main()
