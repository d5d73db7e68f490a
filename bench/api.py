"""How many orders per second does the HTTP API create, and how long does one take?

Starts ``relay api`` as a process of its own on a fresh database (SQLite in a
temporary directory, or a fresh PostgreSQL database), makes an admin key with
the ``relay`` command and SELLERS sellers through the API, warms up with 200
orders, then creates orders with ``POST /api/v1/orders``, every one for a new
buyer (a new conversation and two tokens).  Every answer must be a 201 with
both tokens, and the database must hold exactly the orders created at the end.
The clients are raw asyncio HTTP/1.1 connections (one keep-alive connection
each, in this process, like bench/loadgen.py for SMTP), so that the client
takes as little as possible of the machine's CPU from the relay.

Three loads, each reported per run and then as the median of ``--runs``:

closed loop (default)
    CLIENTS clients each send their next order as soon as the last one is
    answered, ORDERS orders in all: orders per second, latency p50/p90/p99,
    CPU per order of the relay process and of this client.  By Little's law the
    latency is CLIENTS / throughput: a p99 under 50 ms at 50 clients needs more
    than 1,000 orders a second.

open loop (``--rate R[,R...]``)
    Orders arrive at a fixed aggregate rate (evenly spaced, or ``--arrivals
    poisson``) for ``--seconds`` each, served by CLIENTS connections; an order
    that finds every connection busy waits for one, and its latency counts from
    when it arrived (no coordinated omission).  ``--max-rate`` searches for the
    highest rate whose p99 stays under ``--target-ms`` (doubling, then halving
    the interval).

with SMTP (``--with-smtp``)
    ``relay serve`` on bench/run.py's configuration (filters, DKIM, archive,
    delivery to bench/sink.py) with the API on, bench/loadgen.py's SMTP load
    alone and then with an open-loop order load at ``--smtp-api-rate`` on the
    same relay, back to back (their order alternating by run): the SMTP accept
    latency (final ``.`` to ``250``) p50/p99 of both and their ratio.

``--all`` runs what docs/performance.md reports: the closed loop and the rate
search (8-second stages) on SQLite and on PostgreSQL, then the SMTP
comparison, in about 11 minutes.  Every load is bounded in orders and in
time; every process started is stopped by its pid.

    .venv/bin/python bench/api.py --all
    .venv/bin/python bench/api.py [--database sqlite|postgresql] [--runs 3] [--clients 50]
        [--orders 3000 | --rate 100,200 [--seconds 10] | --max-rate [--target-ms 50]
         | --with-smtp [--workers 1] [--smtp-sessions 4] [--smtp-api-rate 100]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RELAY = Path(sys.executable).with_name("relay")
sys.path.insert(0, str(BENCH))

from fresh import free_port, fresh_database  # noqa: E402

WARMUP = 200
"""Orders sent before anything is measured: connections, caches, compiled SQL."""
REQUEST_TIMEOUT = 60.0


def relay(config: Path, *args: str) -> Any:
    out = subprocess.run(
        [str(RELAY), "-c", str(config), *args, "--json"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its reaped children, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def load_average() -> str:
    """The machine's 1-minute load average: other work on it shows in the tails."""
    return f"load {os.getloadavg()[0]:.1f}"


def fsync_p99() -> str:
    """The p99 of 100 fsyncs of 4 KiB here: a commit waits for one (SQLite and
    PostgreSQL alike), so a busy disk shows in the tail of every order."""
    times = []
    with tempfile.TemporaryFile() as probe:
        for _ in range(100):
            probe.write(b"x" * 4096)
            probe.flush()
            started = time.perf_counter()
            os.fsync(probe.fileno())
            times.append(time.perf_counter() - started)
            time.sleep(0.002)
    return f"fsync p99 {pct(times, 0.99) * 1000:.1f} ms"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


# ----------------------------------------------------------------- the client


class Http:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams.

    About 0.1 ms of CPU per request, a fraction of what an HTTP client
    library spends, on the two cores the relay needs.  It understands just what
    uvicorn sends: a status line, headers and a Content-Length body."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request; sent again, once, on a new connection when a kept-alive
        one turns out closed before any answer (the server's idle timeout)."""
        reused = self.writer is not None
        try:
            return await self._request(method, path, body)
        except ConnectionError:
            if not reused:
                raise
            await self.close()
            return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(
                f"{method} {path} HTTP/1.1\r\n".encode()
                + self.head
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status_line = await self.reader.readline()
            if not status_line:
                await self.close()
                raise ConnectionResetError("the server closed the connection")
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            data = await self.reader.readexactly(length) if length else b""
            if close:
                await self.close()
            return status, data

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@dataclass
class Orders:
    """What the clients send: order ``n`` is for buyer ``n`` and seller ``n % len``."""

    sellers: list[int]
    prefix: str = "B"
    next: int = 0
    errors: list[str] = field(default_factory=list)

    def body(self) -> tuple[int, bytes]:
        n = self.next
        self.next += 1
        body = {
            "order_id": f"{self.prefix}-{n}",
            "buyer_email": f"buyer{n}@{self.prefix.lower()}.bench.example",
            "buyer_name": f"Buyer {n}",
            "seller_id": self.sellers[n % len(self.sellers)],
        }
        return n, json.dumps(body).encode()

    async def send(self, http: Http) -> None:
        n, body = self.body()
        status, answer = await http.request("POST", "/api/v1/orders", body)
        if status != 201 or b'"seller_token"' not in answer:
            raise RuntimeError(f"order {n}: {status} {answer[:300]!r}")


async def closed_loop(clients: list[Http], orders: Orders, count: int) -> list[float]:
    """Each client sends its next order when its last is answered; the latencies."""
    latencies: list[float] = []
    left = count

    async def client(http: Http) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            await orders.send(http)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client(h) for h in clients))
    return latencies


@dataclass
class Stage:
    """One open-loop stage: its offered rate and what came of it."""

    rate: float
    offered: int = 0
    latencies: list[float] = field(default_factory=list)
    overloaded: bool = False
    """The backlog passed two seconds of arrivals: the stage was cut short."""
    seconds: float = 0.0

    @property
    def p50_ms(self) -> float:
        return pct(self.latencies, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return float("inf") if self.overloaded else pct(self.latencies, 0.99) * 1000

    @property
    def done_per_s(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def open_loop(
    clients: list[Http],
    orders: Orders,
    rate: float,
    seconds: float,
    arrivals: str = "even",
    stop: threading.Event | None = None,
) -> Stage:
    """Orders arrive at ``rate`` a second for ``seconds`` (or until ``stop``); an
    order waits for a free connection, and its latency counts from its arrival."""
    loop = asyncio.get_running_loop()
    stage = Stage(rate)
    count = int(rate * seconds)
    rng = random.Random(1)
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    backlog_limit = max(len(clients), int(2 * rate))
    t0 = loop.time() + 0.05

    async def producer() -> None:
        due = t0
        for i in range(count):
            due = due + rng.expovariate(rate) if arrivals == "poisson" else t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if queue.qsize() > backlog_limit:
                stage.overloaded = True
                break
            if stop is not None and stop.is_set():
                break
            queue.put_nowait(due)
            stage.offered += 1
        for _ in clients:
            queue.put_nowait(None)

    async def client(http: Http) -> None:
        while (due := await queue.get()) is not None:
            await orders.send(http)
            stage.latencies.append(loop.time() - due)

    await asyncio.gather(producer(), *(client(h) for h in clients))
    stage.seconds = loop.time() - t0
    return stage


async def connect(port: int, key: str, clients: int) -> list[Http]:
    https = [Http("127.0.0.1", port, key) for _ in range(clients)]
    for http in https:  # opened now, so that no measured request pays for it
        http.reader, http.writer = await asyncio.open_connection(http.host, http.port)
    return https


async def make_sellers(port: int, key: str, count: int, tag: str) -> list[int]:
    http = Http("127.0.0.1", port, key)
    ids = []
    for i in range(count):
        body = json.dumps({"name": f"Shop {tag}{i}", "emails": [f"s{i}@{tag}shops.example"]})
        status, answer = await http.request("POST", "/api/v1/sellers", body.encode())
        if status != 201:
            raise RuntimeError(f"seller {i}: {status} {answer[:300]!r}")
        ids.append(int(json.loads(answer)["seller_id"]))
    await http.close()
    return ids


# ------------------------------------------------------------ relay api alone


@contextlib.contextmanager
def relay_api(url: str, workdir: Path) -> Iterator[tuple[int, str, int]]:
    """``relay api`` on ``url``: (port, admin key, pid), stopped by its pid after."""
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
    log_path = workdir / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(RELAY), "api", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while not answers(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"relay api did not start: {log_path.read_text()}")
            time.sleep(0.1)
        try:
            yield port, key, proc.pid
        except BaseException:
            tail = log_path.read_text(errors="replace").splitlines()[-30:]
            print("relay api log:", *tail, sep="\n  ", file=sys.stderr)
            raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def answers(port: int) -> bool:
    async def probe() -> bool:
        http = Http("127.0.0.1", port, "")
        try:
            status, _ = await http.request("GET", "/api/v1/openapi.json")
            return status == 200
        except OSError:
            return False
        finally:
            await http.close()

    return asyncio.run(probe())


def count_orders(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM orders")).scalar_one())
    finally:
        engine.dispose()


@contextlib.contextmanager
def api_run(args: argparse.Namespace, run: int) -> Iterator[tuple[int, str, int, str]]:
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-api-") as tmp,
        fresh_database(args.database, Path(tmp), f"relay_bench_api_{os.getpid()}_{run}") as url,
        relay_api(url, Path(tmp)) as (port, key, pid),
    ):
        yield port, key, pid, url


async def prepared(port: int, key: str, args: argparse.Namespace) -> tuple[list[Http], Orders]:
    """Sellers made, connections open, the warm-up sent."""
    orders = Orders(await make_sellers(port, key, args.sellers, "b"))
    clients = await connect(port, key, args.clients)
    await closed_loop(clients, orders, WARMUP)
    return clients, orders


def closed_run(args: argparse.Namespace, run: int) -> dict[str, float]:
    with api_run(args, run) as (port, key, pid, url):

        async def go() -> tuple[list[float], float, float, float]:
            clients, orders = await prepared(port, key, args)
            cpu0, own0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
            latencies = await closed_loop(clients, orders, args.orders)
            elapsed = time.perf_counter() - t0
            cpu, own = cpu_seconds(pid) - cpu0, time.process_time() - own0
            for http in clients:
                await http.close()
            return latencies, elapsed, cpu, own

        latencies, elapsed, cpu, own = asyncio.run(go())
        stored = count_orders(url)
    if stored != args.orders + WARMUP:
        raise RuntimeError(f"{stored} orders stored, {args.orders + WARMUP} created")
    return {
        "per_second": args.orders / elapsed,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p90_ms": pct(latencies, 0.90) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "cpu_ms": cpu * 1000 / args.orders,
        "client_cpu_ms": own * 1000 / args.orders,
    }


def stage_line(stage: Stage) -> str:
    over = " (overloaded: cut short)" if stage.overloaded else ""
    return (
        f"  {stage.rate:.0f}/s offered: {stage.done_per_s:.0f}/s done, p50 {stage.p50_ms:.1f} ms,"
        f" p99 {stage.p99_ms:.1f} ms{over}"
    )


def rate_run(args: argparse.Namespace, run: int) -> dict[str, Any]:
    """Open-loop stages on one relay: the listed rates, or the search (``--max-rate``)."""
    with api_run(args, run) as (port, key, _pid, url):

        async def go() -> tuple[list[Stage], float | None]:
            clients, orders = await prepared(port, key, args)
            stages: list[Stage] = []

            async def stage(rate: float) -> Stage:
                done = await open_loop(clients, orders, rate, args.seconds, args.arrivals)
                stages.append(done)
                print(stage_line(done), flush=True)
                await asyncio.sleep(1)  # let the relay settle between stages
                return done

            best: float | None = None
            if args.max_rate:
                low, high, rate = 0.0, float("inf"), float(args.start_rate)
                for _ in range(args.steps):
                    if (await stage(rate)).p99_ms < args.target_ms:
                        low = best = rate
                    else:
                        high = rate
                    if high - low <= max(10.0, 0.08 * low):
                        break
                    rate = rate * 2 if high == float("inf") else round((low + high) / 10) * 5
            else:
                for rate in args.rate:
                    await stage(rate)
            for http in clients:
                await http.close()
            return stages, best

        stages, best = asyncio.run(go())
        stored = count_orders(url)
    sent = WARMUP + sum(len(s.latencies) for s in stages)
    if stored != sent:
        raise RuntimeError(f"{stored} orders stored, {sent} created")
    return {"stages": stages, "max_rate": best}


# ---------------------------------------------------------- with SMTP at once


def with_smtp(args: argparse.Namespace) -> list[dict[str, float]]:
    """SMTP accept latency of ``relay serve`` without, then with, an API order load."""
    import run as smtp  # bench/run.py: its relay target, sink and load generator

    class Setup(smtp.RelaySetup):
        """bench/run.py's relay configuration, with the API on a port of its own."""

        api_port = 0

        def config(
            self, workdir: Path, *, port: int, sink_port: int, db_url: str, name: str = "relay"
        ) -> Path:
            import yaml

            path = super().config(workdir, port=port, sink_port=sink_port, db_url=db_url, name=name)
            conf = yaml.safe_load(path.read_text(encoding="utf-8"))
            self.api_port = free_port()
            conf["api"] = {
                "listen": f"127.0.0.1:{self.api_port}",
                "requests_per_minute": 1_000_000,
            }
            conf["logging"] = {"level": "warning"}
            path.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")
            return path

    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="relay-bench-api-smtp-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        setup = Setup(root, args.database, args.smtp_pairs, args.smtp_sessions, RELAY)
        smtp.CLEANUP.add("databases", setup.drop_all)
        try:
            setup.prepare()
            template = root / "template" / "relay.yaml"
            key = setup.cli(template, "api-key", "create", "--scope", "admin")["key"]
            pairs = root / "pairs.json"
            pairs.write_text(json.dumps([p.__dict__ for p in setup.parties]), encoding="utf-8")
            for run in range(args.runs):
                result = smtp_round(args, smtp, setup, root / f"run{run}", pairs, key, run)
                results.append(result)
                print(
                    f"run {run + 1} ({load_average()}): SMTP alone"
                    f" p50 {result['alone_p50_ms']:.1f} ms,"
                    f" p99 {result['alone_p99_ms']:.1f} ms ({result['alone_per_s']:.0f}/s);"
                    f" with {result['api_per_s']:.0f} orders/s (p99"
                    f" {result['api_p99_ms']:.1f} ms): p50 {result['with_p50_ms']:.1f} ms,"
                    f" p99 {result['with_p99_ms']:.1f} ms ({result['with_per_s']:.0f}/s);"
                    f" ratio p50 {result['ratio_p50']:.2f}, p99 {result['ratio_p99']:.2f}",
                    flush=True,
                )
        finally:
            smtp.CLEANUP.run()
    return results


def smtp_round(
    args: argparse.Namespace,
    smtp: Any,
    setup: Any,
    workdir: Path,
    pairs: Path,
    key: str,
    run: int,
) -> dict[str, float]:
    sink = smtp.start_sink(_mkdir(workdir))
    target = None
    try:
        ready = sink.wait_event("ready", 1)
        target = smtp.RelayTarget(setup, workdir, int(ready["port"]), args.workers)
        target.start()
        port = setup.api_port
        deadline = time.monotonic() + 30
        while not answers(port):
            if time.monotonic() > deadline:
                raise RuntimeError("the relay's API did not answer")
            time.sleep(0.1)
        loop = asyncio.new_event_loop()
        try:
            clients, orders = loop.run_until_complete(prepared(port, key, args))
            orders.prefix = f"R{run}"

            def smtp_load(tag: str) -> dict[str, Any]:
                return smtp.run_load(
                    target, sink, workdir, pairs, "4k", args.smtp_messages,
                    args.smtp_sessions, f"api{run}{tag}{secrets.token_hex(2)}",
                )  # fmt: skip

            def alone() -> dict[str, Any]:
                return smtp_load("a")

            def with_api() -> tuple[dict[str, Any], Stage]:
                stop = threading.Event()
                box: list[Stage] = []

                async def offered() -> Stage:
                    for http in clients:  # idle past the keep-alive timeout meanwhile
                        await http.close()
                        http.reader, http.writer = await asyncio.open_connection(
                            http.host, http.port
                        )
                    return await open_loop(clients, orders, args.smtp_api_rate, 600, stop=stop)

                def api_load() -> None:
                    box.append(loop.run_until_complete(offered()))

                thread = threading.Thread(target=api_load, name="api-load")
                thread.start()
                time.sleep(1.0)  # the API load is on before the first message
                try:
                    load = smtp_load("w")
                finally:
                    stop.set()
                    thread.join(120)
                if not box:
                    raise RuntimeError("the API load failed (see above)")
                return load, box[0]

            if run % 2 == 0:
                a = alone()
                w, stage = with_api()
            else:
                w, stage = with_api()
                a = alone()
            for http in clients:
                loop.run_until_complete(http.close())
        finally:
            loop.close()
        for load in (a, w):
            if load["failed"] or load.get("missing"):
                raise RuntimeError(f"SMTP load failed: {load['failures']}, {load.get('missing')}")
        return {
            "alone_p50_ms": a["p50_ms"],
            "alone_p99_ms": a["p99_ms"],
            "alone_per_s": a["accepted_per_s"],
            "with_p50_ms": w["p50_ms"],
            "with_p99_ms": w["p99_ms"],
            "with_per_s": w["accepted_per_s"],
            "api_per_s": stage.done_per_s,
            "api_p99_ms": stage.p99_ms,
            "ratio_p50": w["p50_ms"] / a["p50_ms"],
            "ratio_p99": w["p99_ms"] / a["p99_ms"],
        }
    finally:
        if target is not None:
            target.stop()
        sink.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------------- main


def report(title: str, results: list[dict[str, float]], keys: list[str]) -> None:
    print(f"median of {len(results)} ({title}):")
    for key in keys:
        print(f"  {key}: {statistics.median(r[key] for r in results):.2f}")


def closed(args: argparse.Namespace) -> None:
    results = []
    for run in range(args.runs):
        result = closed_run(args, run)
        results.append(result)
        print(
            f"run {run + 1} ({load_average()}): {result['per_second']:.0f} orders/s,"
            f" p50 {result['p50_ms']:.1f} ms,"
            f" p90 {result['p90_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
            f" {result['cpu_ms']:.2f} ms CPU per order (client {result['client_cpu_ms']:.2f})",
            flush=True,
        )
    report(
        f"{args.database}, closed loop, {args.clients} clients, {args.orders} orders",
        results,
        ["per_second", "p50_ms", "p90_ms", "p99_ms", "cpu_ms", "client_cpu_ms"],
    )


def rates(args: argparse.Namespace) -> None:
    runs = []
    for run in range(args.runs):
        print(f"run {run + 1} ({load_average()}, {fsync_p99()}):", flush=True)
        runs.append(rate_run(args, run))
        if args.max_rate:
            print(f"  highest rate with p99 < {args.target_ms:g} ms: {runs[-1]['max_rate']}")
    title = f"{args.database}, open loop, {args.clients} clients, {args.arrivals} arrivals"
    if args.max_rate:
        best = [r["max_rate"] or 0.0 for r in runs]
        print(f"median of {args.runs} ({title}): highest rate with p99 < {args.target_ms:g} ms:")
        print(f"  max_rate: {statistics.median(best):.0f} orders/s (runs: {best})")
        return
    print(f"median of {args.runs} ({title}):")
    for i, rate in enumerate(args.rate):
        stages = [r["stages"][i] for r in runs]
        print(
            f"  {rate:.0f}/s: p50 {statistics.median(s.p50_ms for s in stages):.1f} ms,"
            f" p99 {statistics.median(s.p99_ms for s in stages):.1f} ms"
        )


def smtp_report(args: argparse.Namespace) -> None:
    results = with_smtp(args)
    report(
        f"{args.database}, relay serve --workers {args.workers}, {args.smtp_sessions} SMTP"
        f" sessions, API at {args.smtp_api_rate:g} orders/s",
        results,
        [
            "alone_p50_ms", "alone_p99_ms", "alone_per_s", "with_p50_ms", "with_p99_ms",
            "with_per_s", "api_per_s", "api_p99_ms", "ratio_p50", "ratio_p99",
        ],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sellers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--rate",
        type=lambda s: [float(x) for x in s.split(",")],
        help="open loop: orders/s offered, one stage per rate (comma-separated)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per open-loop stage")
    parser.add_argument("--arrivals", choices=["even", "poisson"], default="even")
    parser.add_argument("--max-rate", action="store_true", help="search the highest rate")
    parser.add_argument("--target-ms", type=float, default=50.0, help="p99 of --max-rate")
    parser.add_argument("--start-rate", type=float, default=100.0)
    parser.add_argument("--steps", type=int, default=7, help="stages of --max-rate, at most")
    parser.add_argument("--with-smtp", action="store_true", help="SMTP latency with API load")
    parser.add_argument("--workers", type=int, default=1, help="relay serve --workers")
    parser.add_argument("--smtp-sessions", type=int, default=4)
    parser.add_argument("--smtp-messages", type=int, default=1000)
    parser.add_argument("--smtp-pairs", type=int, default=20)
    parser.add_argument("--smtp-api-rate", type=float, default=100.0)
    parser.add_argument("--all", action="store_true", help="what docs/performance.md reports")
    args = parser.parse_args()
    if args.all:  # sized to finish in about 11 minutes
        args.seconds, args.steps, args.smtp_messages = 8.0, 6, 800
        for database in ("sqlite", "postgresql"):
            args.database = database
            closed(args)
            args.max_rate = True
            rates(args)
            args.max_rate = False
        args.database = "sqlite"
        smtp_report(args)
    elif args.with_smtp:
        smtp_report(args)
    elif args.rate or args.max_rate:
        rates(args)
    else:
        closed(args)


if __name__ == "__main__":
    main()
