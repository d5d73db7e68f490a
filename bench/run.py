"""The relay against a bare aiosmtpd server and Postfix, on the same load.

    make bench            # = .venv/bin/python bench/run.py; make bench BENCH_ARGS="--runs 1"
    .venv/bin/python bench/run.py [--size 4k|200k|both] [--sessions 20] [--messages M]
        [--runs 3] [--database sqlite|postgresql] [--workers 2] [--pairs 20]
        [--targets bare,postfix,relay] [--shape session|connection|both]
        [--json FILE] [--soak N] [--keep]

Three targets, started fresh and measured back to back in every round:

- bare: an aiosmtpd server that accepts and discards (bench/references.py);
- postfix: a private Postfix instance, a plain durable relay to the sink
  (installed with apt if missing, without starting the system's Postfix);
- relay: ``relay serve [--workers N]`` on a generated configuration: SQLite (or a
  fresh PostgreSQL database) in the temporary directory, SMTP delivery to the
  sink, the shipped filter rules, DKIM signing, the archive, abuse limits lifted.
  The buyer/seller pairs are registered once with the ``relay`` command; every
  run gets a copy of that database.

The load generator (bench/loadgen.py) and the sink (bench/sink.py) are separate
processes.  Per target it reports accepted and delivered (end to end: until the
last message reached the sink) messages per second, the accept latency (final
``.`` to ``250``), CPU per message of the target's processes (the whole process
tree, reaped children included), their peak summed RSS and PSS; the median of
``--runs`` rounds, then the relay's figures as ratios to bare and to Postfix.
Failed, missing and duplicated messages are counted and shown.

Two shapes of load (``--shape``, both by default): ``session``, where each of
the 20 clients keeps one SMTP session for all its messages, and ``connection``,
where every message pays a new connection, greeting, EHLO and QUIT (what
Postfix's ``smtp-source`` and most MTAs do).

``--soak N`` sends N messages to the relay only and prints its memory every 10%.

Everything lives in a temporary directory and every process started is stopped
by its pid on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from references import PostfixError, PostfixInstance, ensure_postfix  # noqa: E402

DOMAIN = "marketplace.example.com"
TARGETS = ("bare", "postfix", "relay")
DEFAULT_MESSAGES = {"4k": 2000, "200k": 500}
SECONDS_PER_MESSAGE = {"4k": 0.5, "200k": 2.0}
"""Generous time budget per message (the relay once did ~10-40 messages/s)."""
START_TIMEOUT = 90.0
STALL_TIMEOUT = 180.0
"""Give up waiting for deliveries after this long without a new one."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


# ------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    cpu_ticks: int
    """utime + stime + cutime + cstime: the process, its threads and reaped children."""
    start: int
    rss_pages: int


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, ..., utime (14) ... starttime (22), rss (24)
    return Stat(
        pid=pid,
        ppid=int(fields[1]),
        cpu_ticks=sum(int(x) for x in fields[11:15]),
        start=int(fields[19]),
        rss_pages=int(fields[21]),
    )


def all_stats() -> dict[int, Stat]:
    out: dict[int, Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                out[st.pid] = st
    return out


def tree(roots: list[int], stats: dict[int, Stat] | None = None) -> list[Stat]:
    """The live processes under ``roots``, roots included."""
    stats = all_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out: list[Stat] = []
    todo = [r for r in roots if r in stats]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(stats[pid])
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(roots: list[int]) -> float:
    return sum(st.cpu_ticks for st in tree(roots)) / CLK_TCK


def alive(pid: int, start: int) -> bool:
    st = read_stat(pid)
    return st is not None and st.start == start


def kill_exact(pid: int, start: int, sig: int = signal.SIGKILL) -> None:
    """Signal ``pid`` only if it is still the process we saw (same start time)."""
    if alive(pid, start):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


class Cleanup:
    """What the bench started; ``run()`` stops all of it, last started first."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], None]]] = []
        self.seen: dict[int, int] = {}
        """Every process of ours ever seen (pid → start time), for a last sweep."""
        self.lock = threading.Lock()

    def add(self, what: str, action: Callable[[], None]) -> None:
        self.actions.append((what, action))

    def remove(self, action: Callable[[], None]) -> None:
        self.actions = [(w, a) for w, a in self.actions if a is not action]

    def saw(self, stats: list[Stat]) -> None:
        with self.lock:
            for st in stats:
                self.seen.setdefault(st.pid, st.start)

    def run(self) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C waits
        try:
            self._run()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _run(self) -> None:
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except Exception as exc:
                print(f"  cleanup: {what}: {exc!r}", file=sys.stderr)
        with self.lock:
            seen = dict(self.seen)
        left = [pid for pid, start in seen.items() if alive(pid, start) and pid != os.getpid()]
        for pid in left:
            kill_exact(pid, seen[pid])
        if left:
            print(f"  cleanup: killed leftover processes {left}", file=sys.stderr)


CLEANUP = Cleanup()


def stop_popen(
    proc: subprocess.Popen[Any], *, grace: float = 10.0, quit_line: bool = False
) -> None:
    """Stop one child (and whatever it forked) by pid: quit/SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    root = read_stat(proc.pid)
    family = tree([proc.pid]) if root is not None else []
    CLEANUP.saw(family)
    if quit_line and proc.stdin is not None:
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write("quit\n")
            proc.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for st in family:
        kill_exact(st.pid, st.start)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (several with SO_REUSEPORT workers)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            ok = s.recv(512).startswith(b"220")
            with contextlib.suppress(OSError):
                s.sendall(b"QUIT\r\n")
                s.recv(512)
            return ok
    except OSError:
        return False


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


class JsonLineProc:
    """A child that speaks JSON lines on stdout and takes commands on stdin."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us by pid
            )
        CLEANUP.add(name, self.stop)
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["_seen"] = time.monotonic()
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"event": "eof", "_seen": time.monotonic()})
            self.cond.notify_all()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_event(self, kind: str, timeout: float, start: int = 0) -> dict[str, Any] | None:
        """The first ``kind`` event at index ``start`` or later; None on timeout or EOF."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events[start:]:
                    if event["event"] == kind:
                        return event
                if any(e["event"] == "eof" for e in self.events[start:]):
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def ask(self, command: str, reply: str, timeout: float = 30) -> dict[str, Any] | None:
        with self.cond:
            mark = len(self.events)
        self.send(command)
        return self.wait_event(reply, timeout, mark)

    def stop(self) -> None:
        stop_popen(self.proc, quit_line=True)
        CLEANUP.remove(self.stop)


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among their sharers (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class Sampler:
    """Peak summed RSS of a process tree, sampled every 100 ms in a thread.

    Summed RSS counts shared pages (libraries, pages a fork shares) once per
    process, which inflates many-process servers such as Postfix; the summed PSS,
    sampled every 500 ms, shares them out instead."""

    def __init__(self, roots: Callable[[], list[int]]) -> None:
        self.roots = roots
        self.peak = 0
        self.peak_pss = 0
        self.current = 0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        family = tree(self.roots())
        CLEANUP.saw(family)
        rss = sum(st.rss_pages for st in family) * PAGE
        self.current = rss
        self.peak = max(self.peak, rss)
        if self.count % 5 == 0:
            self.peak_pss = max(self.peak_pss, sum(pss_bytes(st.pid) for st in family))
        self.count += 1
        return rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------- targets


class Target:
    name = ""
    port = 0
    also_ports: tuple[int, ...] = ()
    """Further servers of the same target (``--instances``): the load is spread."""

    def start(self) -> None:
        raise NotImplementedError

    def roots(self) -> list[int]:
        raise NotImplementedError

    def server_cpu(self) -> dict[int, int]:
        """CPU ticks of out-of-tree server processes working for the target (none)."""
        return {}

    def stop(self) -> None:
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []


class BareTarget(Target):
    name = "bare"

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "bare.log"
        self.proc: JsonLineProc | None = None

    def start(self) -> None:
        self.proc = JsonLineProc(
            "bare server",
            [sys.executable, str(BENCH / "references.py"), "bare", "--port", "0"],
            self.log,
        )
        ready = self.proc.wait_event("ready", START_TIMEOUT)
        if ready is None:
            raise RuntimeError(f"the bare server did not start:\n{tail(self.log)}")
        self.port = int(ready["port"])

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class PostfixTarget(Target):
    name = "postfix"

    def __init__(self, workdir: Path, sink_port: int) -> None:
        self.instance = PostfixInstance(
            workdir / "postfix", port=free_port(), sink_port=sink_port, relay_domain=DOMAIN
        )
        self.port = self.instance.port

    def start(self) -> None:
        CLEANUP.add("postfix", self.stop)
        try:
            self.instance.start(START_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise PostfixError(f"postfix start timed out\n{self.instance.maillog_tail()}") from exc
        deadline = time.monotonic() + START_TIMEOUT
        while not greets(self.port):
            if time.monotonic() > deadline:
                raise PostfixError(f"Postfix does not answer:\n{self.instance.maillog_tail()}")
            time.sleep(0.1)

    def roots(self) -> list[int]:
        return [self.instance.master_pid] if self.instance.master_pid else []

    def stop(self) -> None:
        CLEANUP.remove(self.stop)
        family = tree(self.roots())
        CLEANUP.saw(family)
        self.instance.stop()
        for st in family:
            kill_exact(st.pid, st.start)

    def notes(self) -> list[str]:
        problems = self.instance.errors()
        queued = self.instance.queue_size()
        out = [f"postfix maillog: {p}" for p in problems]
        if queued:
            out.append(f"postfix: {queued} messages still queued")
        return out


@dataclass
class Party:
    mail_from: str
    rcpt: str
    from_header: str
    order: str


@dataclass
class RelaySetup:
    """Registered once per bench (CLI), cloned per round: a fresh database each time."""

    root: Path
    database: str
    pairs: int
    sessions: int
    relay_bin: Path
    parties: list[Party] = field(default_factory=list)
    pg_template: str | None = None
    pg_databases: list[str] = field(default_factory=list)

    @property
    def dkim_key(self) -> Path:
        return self.root / "dkim" / "relay.key"

    def config(
        self, workdir: Path, *, port: int, sink_port: int, db_url: str, name: str = "relay"
    ) -> Path:
        import yaml

        conf = {
            "marketplace": {"domain": DOMAIN, "name": "Example Marketplace"},
            "smtp": {
                "host": "127.0.0.1",
                "port": port,
                "hostname": "mx.bench.example",
                "pid_file": str(workdir / f"{name}.pid"),
                # The load's sessions last the whole run (a soak: over an hour),
                # longer than the 30 minutes a real session may.
                "session_timeout": 24 * 3600,
            },
            "api": {"listen": None},
            "auth": {"policy": "none"},
            "database": {"url": db_url},
            "archive": {"path": str(workdir / "archive")},
            "delivery": {
                "mode": "smtp",
                "smtp": {"host": "127.0.0.1", "port": sink_port, "starttls": False},
            },
            "filters": {"rules": str(ROOT / "config" / "filters.yaml")},
            "dkim": {"enabled": True, "selector": "relay", "private_key": str(self.dkim_key)},
            "campaigns": {"unsubscribe": {"listen": "127.0.0.1:0"}},
            # The load is 20 parties sending thousands of messages an hour from one IP.
            "limits": {
                "messages_per_sender": 10**9,
                "messages_per_conversation": 10**9,
                "connections_per_ip": 10**9,
                "unknown_recipients_per_ip": 10**9,
                "max_connections": max(200, 4 * self.sessions),
            },
        }
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")
        return path

    def cli(self, config: Path, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [str(self.relay_bin), "-c", str(config), "--json", *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"relay {' '.join(args)}: {done.stderr.strip() or done.stdout}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def prepare(self) -> None:
        template = self.root / "template"
        if self.database == "postgresql":
            self.pg_template = f"relay_bench_{secrets.token_hex(4)}_tpl"
            self._pg(f'CREATE DATABASE "{self.pg_template}"')
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.pg_template}"
        else:
            url = f"sqlite:///{template / 'relay.db'}"
        config = self.config(template, port=free_port(), sink_port=1025, db_url=url)
        self.cli(config, "dkim", "keygen")
        n = self.pairs
        first = self.cli(
            config,
            "seller",
            "add",
            "--name",
            "Bench Seller 1",
            "--email",
            "seller01@seller.example",
        )
        with ThreadPoolExecutor(4) as pool:
            sellers = [
                first["seller_id"],
                *pool.map(
                    lambda i: self.cli(
                        config,
                        "seller",
                        "add",
                        "--name",
                        f"Bench Seller {i}",
                        "--email",
                        f"seller{i:02d}@seller.example",
                    )["seller_id"],
                    range(2, n + 1),
                ),
            ]
            orders = list(
                pool.map(
                    lambda i: self.cli(
                        config,
                        "order",
                        "add",
                        f"BENCH-{i:04d}",
                        "--buyer",
                        f"buyer{i:02d}@buyer.example",
                        "--buyer-name",
                        f"Bench Buyer {i}",
                        "--seller",
                        str(sellers[i - 1]),
                    ),
                    range(1, n + 1),
                )
            )
        self.parties = [
            Party(
                mail_from=f"buyer{i:02d}@buyer.example",
                rcpt=o["seller_token"],
                from_header=f"Bench Buyer {i} <buyer{i:02d}@buyer.example>",
                order=o["order_id"],
            )
            for i, o in enumerate(orders, start=1)
        ]

    def fresh_database(self, workdir: Path) -> str:
        """A copy of the registered template for one run; its URL."""
        if self.database == "postgresql":
            name = f"relay_bench_{secrets.token_hex(4)}"
            self._pg(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_template}"')
            self.pg_databases.append(name)
            return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            src = self.root / "template" / f"relay.db{suffix}"
            if src.exists():
                shutil.copy2(src, workdir / f"relay.db{suffix}")
        return f"sqlite:///{workdir / 'relay.db'}"

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        if self.database == "postgresql" and name in self.pg_databases:
            self._pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.pg_databases.remove(name)

    def drop_all(self) -> None:
        for name in [*self.pg_databases, *([self.pg_template] if self.pg_template else [])]:
            self._pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.pg_databases.clear()
        self.pg_template = None

    @staticmethod
    def _pg(sql: str) -> None:
        import psycopg

        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.encode())


class RelayTarget(Target):
    name = "relay"

    def __init__(
        self, setup: RelaySetup, workdir: Path, sink_port: int, workers: int, instances: int = 1
    ) -> None:
        self.setup = setup
        self.workdir = workdir
        ports = [free_port() for _ in range(instances)]
        self.port, self.also_ports = ports[0], tuple(ports[1:])
        self.db_url = setup.fresh_database(workdir)
        names = ["relay"] if instances == 1 else [f"relay{i + 1}" for i in range(instances)]
        self.members = [
            (
                name,
                port,
                setup.config(
                    workdir, port=port, sink_port=sink_port, db_url=self.db_url, name=name
                ),
            )
            for name, port in zip(names, ports, strict=True)
        ]
        self.config = self.members[0][2]
        self.workers = workers
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        CLEANUP.add("relay", self.stop)
        for name, port, config in self.members:
            argv = [str(self.setup.relay_bin), "serve", "-c", str(config)]
            if self.workers > 1:
                argv += ["--workers", str(self.workers)]
            log_path = self.workdir / f"{name}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append(proc)
            deadline = time.monotonic() + START_TIMEOUT
            while listeners(port) < self.workers or not greets(port):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"relay serve exited with {proc.returncode}:\n{tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"relay serve did not start listening:\n{tail(log_path)}")
                time.sleep(0.1)

    def roots(self) -> list[int]:
        return [p.pid for p in self.procs]

    def server_cpu(self) -> dict[int, int]:
        """The PostgreSQL backends serving this run's database: pid → CPU ticks."""
        if self.setup.database != "postgresql":
            return {}
        marker = f" {self.db_url.rsplit('/', 1)[1]} ".encode()
        out: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            if cmdline.startswith(b"postgres: ") and marker in cmdline:
                st = read_stat(int(name))
                if st is not None:
                    out[st.pid] = st.cpu_ticks
        return out

    def stop(self) -> None:
        CLEANUP.remove(self.stop)
        for proc in self.procs:
            stop_popen(proc, grace=60)
        self.setup.drop_database(self.db_url)

    def notes(self) -> list[str]:
        lines: list[str] = []
        for name, _port, _config in self.members:
            with contextlib.suppress(OSError):
                lines += (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]
        out = [f"relay log: {ln}" for ln in bad[:8]]
        if len(bad) > 8:
            out.append(f"relay log: ... {len(bad) - 8} more warnings/errors")
        return out


# ------------------------------------------------------------------------ runs


@dataclass
class Options:
    sizes: list[str]
    sessions: int
    messages: dict[str, int]
    runs: int
    database: str
    workers: int
    targets: list[str]
    pairs: int
    shapes: list[str] = field(default_factory=lambda: ["session"])
    instances: int = 1


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def start_sink(workdir: Path) -> JsonLineProc:
    sink = JsonLineProc(
        "sink",
        [
            sys.executable,
            str(BENCH / "sink.py"),
            "--port",
            "0",
            "--sample",
            str(workdir / "first-delivered.eml"),
        ],
        workdir / "sink.log",
    )
    if sink.wait_event("ready", START_TIMEOUT) is None:
        raise RuntimeError(f"the sink did not start:\n{tail(workdir / 'sink.log')}")
    return sink


def run_load(
    target: Target,
    sink: JsonLineProc | None,
    workdir: Path,
    pairs_file: Path,
    size: str,
    messages: int,
    sessions: int,
    run_id: str,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    progress_every: int = 0,
    shape: str = "session",
) -> dict[str, Any]:
    """One load against a started target; the figures of this run."""
    budget = 120 + messages * SECONDS_PER_MESSAGE[size]
    out = workdir / f"load-{target.name}.json"
    loadgen = JsonLineProc(
        "load generator",
        [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--port",
            str(target.port),
            "--pairs",
            str(pairs_file),
            "--out",
            str(out),
            "--sessions",
            str(sessions),
            "--messages",
            str(messages),
            "--size",
            size,
            "--run-id",
            run_id,
            "--timeout",
            str(budget),
            "--progress",
            str(progress_every),
            "--shape",
            shape,
            *[arg for port in target.also_ports for arg in ("--also-port", str(port))],
        ],
        workdir / f"loadgen-{target.name}.log",
    )
    try:
        ready = loadgen.wait_event("ready", START_TIMEOUT)
        if ready is None:
            raise RuntimeError(
                f"the load generator did not get ready against {target.name}:\n"
                + tail(workdir / f"loadgen-{target.name}.log")
            )
        if sink is not None:
            sink.send(f"expect {messages}")
        with Sampler(target.roots) as sampler:
            cpu0 = tree_cpu_seconds(target.roots())
            db0 = target.server_cpu()
            loadgen.send("go")
            mark = 0
            hard_deadline = time.monotonic() + budget + 180
            while loadgen.proc.poll() is None:
                if time.monotonic() > hard_deadline:
                    raise RuntimeError(f"the load against {target.name} did not finish in time")
                with loadgen.cond:
                    new = loadgen.events[mark:]
                    mark = len(loadgen.events)
                    if not new:
                        loadgen.cond.wait(1.0)
                for event in new:
                    if event["event"] == "progress" and on_progress is not None:
                        on_progress(event)
            if loadgen.proc.returncode != 0 or not out.exists():
                raise RuntimeError(
                    f"the load generator failed (exit {loadgen.proc.returncode}):\n"
                    + tail(workdir / f"loadgen-{target.name}.log")
                )
            load: dict[str, Any] = json.loads(out.read_text())
            accepted = int(load["accepted"])
            cpu_end = cpu1 = tree_cpu_seconds(target.roots())
            t_delivered = load["t_last_accept"]
            delivery: dict[str, Any] = {}
            if sink is not None:
                delivery, t_delivered, cpu_end = wait_deliveries(
                    sink, workdir, target, accepted, messages, size, on_progress
                )
            peak = max(sampler.peak, sampler.sample())
            db1 = target.server_cpu()
            # backends that exited meanwhile are lost; new ones count in full
            db_cpu = sum(t - db0.get(pid, 0) for pid, t in db1.items()) / CLK_TCK
    finally:
        loadgen.stop()
    t0, t_acc = load["t_start"], load["t_last_accept"]
    lat = load["latencies_ms"]
    result: dict[str, Any] = {
        "messages": messages,
        "message_bytes": load["message_bytes"],
        "accepted": accepted,
        "failed": load["failed"],
        "failures": load["failures"],
        "failure_samples": load["failure_samples"],
        "reconnects": load["reconnects"],
        "load_timed_out": load["timed_out"],
        "accept_seconds": t_acc - t0,
        "accepted_per_s": accepted / (t_acc - t0) if accepted and t_acc > t0 else 0.0,
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "cpu_seconds_at_accept": cpu1 - cpu0,
        "cpu_seconds": cpu_end - cpu0,
        "cpu_ms_per_msg": (cpu_end - cpu0) * 1000 / accepted if accepted else float("nan"),
        "db_server_cpu_ms_per_msg": db_cpu * 1000 / accepted if db1 and accepted else None,
        "peak_rss_mb": peak / 2**20,
        "peak_pss_mb": sampler.peak_pss / 2**20,
        "rss_samples": sampler.count,
    }
    if sink is None:
        result.update(delivered=accepted, delivered_per_s=result["accepted_per_s"])
    else:
        seen: dict[int, int] = delivery.pop("seen")
        accepted_seqs = set(load["accepted_seqs"])
        distinct_ok = sum(1 for s in seen if s in accepted_seqs)
        complete = distinct_ok >= accepted
        result.update(
            delivered=distinct_ok,
            delivered_per_s=(
                accepted / (t_delivered - t0) if complete and accepted and t_delivered else 0.0
            ),
            deliver_seconds=(t_delivered - t0) if t_delivered else None,
            missing=accepted - distinct_ok,
            duplicates=sum(c - 1 for c in seen.values() if c > 1),
            unexpected=sum(1 for s in seen if s not in accepted_seqs),
            unmarked=delivery["unmarked"],
            sink_connections=delivery["connections"],
        )
    return result


def wait_deliveries(
    sink: JsonLineProc,
    workdir: Path,
    target: Target,
    accepted: int,
    messages: int,
    size: str,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> tuple[dict[str, Any], float | None, float]:
    """Wait for ``accepted`` distinct messages at the sink; (status + seen, time of
    the last one, target CPU seconds then)."""
    if accepted != messages:
        sink.send(f"expect {accepted}")
    deadline = time.monotonic() + 120 + messages * SECONDS_PER_MESSAGE[size] / 2
    last_count, last_change = -1, time.monotonic()
    done: dict[str, Any] | None = None
    while accepted and time.monotonic() < deadline:
        done = sink.wait_event("done", 2.0)
        if done is not None:
            break
        status = sink.ask("status", "status")
        if status is None:
            raise RuntimeError("the sink stopped answering")
        if status["distinct"] != last_count:
            last_count, last_change = status["distinct"], time.monotonic()
            if on_progress is not None:
                on_progress({**status, "event": "delivered"})
        elif time.monotonic() - last_change > STALL_TIMEOUT:
            break
    cpu_end = tree_cpu_seconds(target.roots())
    time.sleep(1.0)  # late duplicates
    dump = workdir / "sink-seen.json"
    try:
        if sink.ask(f"dump {dump}", "dumped") is None:
            raise RuntimeError("the sink did not dump its counts")
        seen = {int(k): int(v) for k, v in json.loads(dump.read_text()).items()}
    finally:
        dump.unlink(missing_ok=True)
    status = sink.ask("status", "status") or {}
    t_last = done["nth"] if done is not None else None
    return {**status, "seen": seen}, t_last, cpu_end


def run_target(
    name: str,
    opts: Options,
    setup: RelaySetup | None,
    workdir: Path,
    size: str,
    pairs: Path,
    run_id: str,
    shape: str = "session",
) -> tuple[dict[str, Any], list[str]]:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    sink = start_sink(workdir) if name != "bare" else None
    target: Target | None = None
    try:
        sink_port = 0
        if sink is not None:
            ready = sink.wait_event("ready", 1)
            assert ready is not None
            sink_port = int(ready["port"])
        if name == "bare":
            target = BareTarget(workdir)
        elif name == "postfix":
            target = PostfixTarget(workdir, sink_port)
        else:
            assert setup is not None
            target = RelayTarget(setup, workdir, sink_port, opts.workers, opts.instances)
        target.start()
        result = run_load(
            target,
            sink,
            workdir,
            pairs,
            size,
            opts.messages[size],
            opts.sessions,
            run_id,
            shape=shape,
        )
        notes = target.notes()
        sample = workdir / "first-delivered.eml"
        if sample.exists():
            head = sample.read_bytes().split(b"\r\n\r\n", 1)[0].lower()
            result["dkim_signed"] = b"\ndkim-signature:" in b"\n" + head
            if name == "relay" and not result["dkim_signed"]:
                notes.append("relay: the first delivered message carries no DKIM-Signature")
        return result, notes
    finally:
        if target is not None:
            target.stop()
        if sink is not None:
            sink.stop()


# ---------------------------------------------------------------------- report

COLUMNS = [
    ("accepted/s", "accepted_per_s", "{:.1f}"),
    ("delivered/s", "delivered_per_s", "{:.1f}"),
    ("p50 ms", "p50_ms", "{:.1f}"),
    ("p90 ms", "p90_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("CPU ms/msg", "cpu_ms_per_msg", "{:.2f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
    ("PSS MB", "peak_pss_mb", "{:.0f}"),
    ("failed", "failed", "{:.0f}"),
    ("missing", "missing", "{:.0f}"),
    ("dup", "duplicates", "{:.0f}"),
]


def median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for _title, key, _fmt in COLUMNS:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    return out


def print_table(
    size: str, opts: Options, results: dict[str, list[dict[str, Any]]], shape: str = "session"
) -> None:
    sample = next((r[0] for r in results.values() if r), None)
    nbytes = f"{sample['message_bytes']:,}-byte" if sample else ""
    how = "sessions" if shape == "session" else "clients, a new SMTP session per message"
    print()
    print(
        f"== {size}: {opts.messages[size]} {nbytes} messages, {opts.sessions} {how},"
        f" median of {opts.runs} round(s) =="
    )
    widths = [9] + [max(len(t), 8) for t, _k, _f in COLUMNS]
    print(
        "  ".join(
            h.rjust(w) for h, w in zip(["target"] + [c[0] for c in COLUMNS], widths, strict=True)
        )
    )
    medians: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        if not runs:
            continue
        med = medians[name] = median_of(runs)
        cells = [name.ljust(widths[0])]
        for (_t, key, fmt), w in zip(COLUMNS, widths[1:], strict=True):
            cells.append((fmt.format(med[key]) if key in med else "-").rjust(w))
        print("  ".join(cells))
    relay = medians.get("relay")
    for ref in ("bare", "postfix"):
        other = medians.get(ref)
        if relay is None or other is None:
            continue

        def ratio(
            key: str, relay: dict[str, float] = relay, other: dict[str, float] = other
        ) -> str:
            a, b = relay.get(key), other.get(key)
            if a is None or b is None or b == 0:
                return "-"
            return f"{a / b:.3g}x"

        print(
            f"relay / {ref}: accepted/s {ratio('accepted_per_s')},"
            f" delivered/s {ratio('delivered_per_s')}, p99 latency {ratio('p99_ms')},"
            f" CPU/msg {ratio('cpu_ms_per_msg')}, peak RSS {ratio('peak_rss_mb')},"
            f" PSS {ratio('peak_pss_mb')}"
        )
    db = [r["db_server_cpu_ms_per_msg"] for r in results.get("relay", [])]
    if db and all(x is not None for x in db):
        print(
            f"(the relay's CPU/msg leaves out its PostgreSQL backends:"
            f" {statistics.median(db):.2f} ms/msg more)"
        )


def describe_run(name: str, r: dict[str, Any]) -> str:
    text = (
        f"{name:8} {r['accepted']}/{r['messages']} accepted in {r['accept_seconds']:.1f} s"
        f" ({r['accepted_per_s']:.1f}/s), delivered/s {r['delivered_per_s']:.1f},"
        f" p99 {r['p99_ms']:.0f} ms, CPU {r['cpu_ms_per_msg']:.2f} ms/msg,"
        f" peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    if r.get("db_server_cpu_ms_per_msg") is not None:
        text += f" (+ PostgreSQL backends {r['db_server_cpu_ms_per_msg']:.2f} ms/msg)"
    problems = []
    if r["failed"]:
        problems.append(f"{r['failed']} FAILED {r['failures']}")
    for key in ("missing", "duplicates", "unexpected", "unmarked"):
        if r.get(key):
            problems.append(f"{r[key]} {key}")
    if r["load_timed_out"]:
        problems.append("load TIMED OUT")
    if problems:
        text += "\n           !! " + "; ".join(problems)
        for sample in r["failure_samples"][:3]:
            text += f"\n           !! {sample}"
    return text


# ------------------------------------------------------------------------ main


def workers_supported(relay_bin: Path) -> bool:
    done = subprocess.run(
        [str(relay_bin), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    return "--workers" in done.stdout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the relay against bare aiosmtpd and Postfix on the same load."
    )
    parser.add_argument("--size", choices=["4k", "200k", "both"], default="both")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions")
    parser.add_argument(
        "--messages", type=int, default=None, help="messages per run (default 2000 4k, 500 200k)"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=2, help="relay serve --workers N")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="comma-separated subset of bare,postfix,relay"
    )
    parser.add_argument("--pairs", type=int, default=20, help="buyer/seller pairs in the load")
    parser.add_argument(
        "--shape",
        choices=["session", "connection", "both"],
        default="both",
        help="session: messages share SMTP sessions; connection: a new session per message",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="relay serve processes sharing one PostgreSQL database (each --workers N)",
    )
    parser.add_argument("--json", metavar="FILE", help="save the raw figures of every run")
    parser.add_argument(
        "--soak", type=int, metavar="N", help="send N messages to the relay only; RSS every 10%%"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory (logs, configs)"
    )
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        parser.error(f"--targets: choose among {', '.join(TARGETS)} (got {args.targets!r})")
    args.targets = [t for t in TARGETS if t in targets]
    if min(args.sessions, args.runs, args.workers, args.pairs) < 1:
        parser.error("--sessions, --runs, --workers and --pairs must be at least 1")
    if args.instances < 1 or (args.instances > 1 and args.database != "postgresql"):
        parser.error("--instances N (N > 1) needs --database postgresql")
    if args.messages is not None and args.messages < 1:
        parser.error("--messages must be at least 1")
    return args


def find_relay_bin() -> Path:
    for candidate in (Path(sys.executable).with_name("relay"), ROOT / ".venv" / "bin" / "relay"):
        if candidate.exists():
            return candidate
    raise SystemExit("cannot find the relay command: run `make .venv/.installed` first")


def soak(opts: Options, setup: RelaySetup, root: Path, pairs: Path, n: int) -> dict[str, Any]:
    size = opts.sizes[0]
    workdir = root / "soak"
    workdir.mkdir()
    workdir.chmod(0o755)
    sink = start_sink(workdir)
    ready = sink.wait_event("ready", 1)
    assert ready is not None
    target = RelayTarget(setup, workdir, int(ready["port"]), opts.workers)
    print(f"soak: {n} {size} messages to the relay, {opts.sessions} sessions")
    step = max(1, n // 10)
    t_begin = time.monotonic()
    delivered = [0]

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "delivered":
            delivered[0] = event["distinct"]
            return
        family = tree(target.roots())
        rss = sum(st.rss_pages for st in family) * PAGE / 2**20
        per = ", ".join(f"{st.rss_pages * PAGE / 2**20:.0f}" for st in family)
        status = sink.ask("status", "status", timeout=10) or {}
        elapsed = time.monotonic() - t_begin
        print(
            f"  {event['accepted'] * 100 // n:3d}%  accepted {event['accepted']:>7}"
            f"  delivered {status.get('distinct', '?'):>7}  failed {event['failed']}"
            f"  RSS {rss:7.1f} MB ({per})  {elapsed:6.0f} s",
            flush=True,
        )

    try:
        target.start()
        family = tree(target.roots())
        print(
            f"  start  RSS {sum(s.rss_pages for s in family) * PAGE / 2**20:7.1f} MB"
            f" ({len(family)} processes)",
            flush=True,
        )
        result = run_load(
            target,
            sink,
            workdir,
            pairs,
            size,
            n,
            opts.sessions,
            f"soak{secrets.token_hex(3)}",
            progress,
            progress_every=step,
        )
        family = tree(target.roots())
        print(
            f"  end    RSS {sum(s.rss_pages for s in family) * PAGE / 2**20:7.1f} MB"
            f" ({', '.join(f'{s.rss_pages * PAGE / 2**20:.0f}' for s in family)}),"
            f" all delivered after {time.monotonic() - t_begin:.0f} s"
        )
        print(describe_run("relay", result))
        return result
    finally:
        target.stop()
        sink.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = ["4k", "200k"] if args.size == "both" else [args.size]
    if args.soak:
        sizes = sizes[:1]
    opts = Options(
        sizes=sizes,
        sessions=args.sessions,
        messages={s: args.messages or DEFAULT_MESSAGES[s] for s in sizes},
        runs=args.runs,
        database=args.database,
        workers=args.workers,
        targets=["relay"] if args.soak else args.targets,
        pairs=args.pairs,
        shapes=["session", "connection"] if args.shape == "both" else [args.shape],
        instances=args.instances,
    )
    relay_bin = find_relay_bin()
    notes: list[str] = []
    if "postfix" in opts.targets:
        why = ensure_postfix()
        if why is not None:
            print(f"Postfix target skipped: {why}")
            opts.targets.remove("postfix")
            notes.append(f"postfix skipped: {why}")
    if "relay" in opts.targets and opts.workers > 1 and not workers_supported(relay_bin):
        print(
            f"relay serve has no --workers option: the relay runs as 1 process, not {opts.workers}"
        )
        notes.append("relay ran as one process (relay serve has no --workers)")
        opts.workers = 1
    print(
        f"bench: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()};"
        f" targets {', '.join(opts.targets)}"
        + (
            f"; relay: {opts.database}, {opts.workers} worker process(es)"
            if "relay" in opts.targets
            else ""
        )
    )

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    report: dict[str, Any] = {
        "options": {**opts.__dict__},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "notes": notes,
        "results": {},
    }
    status = 1
    try:
        tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        try:
            status = run_all(args, opts, tmp, report)
        finally:
            CLEANUP.run()  # before the directory goes: Postfix and the relay live in it
            if args.keep:
                print(f"kept the working directory: {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        status = 130
    except (RuntimeError, PostfixError) as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
            print(f"raw figures: {args.json}")
    return status


def run_all(args: argparse.Namespace, opts: Options, root: Path, report: dict[str, Any]) -> int:
    root.chmod(0o755)  # Postfix's daemons run as user postfix
    setup: RelaySetup | None = None
    if "relay" in opts.targets:
        setup = RelaySetup(root, opts.database, opts.pairs, opts.sessions, find_relay_bin())
        CLEANUP.add("databases", setup.drop_all)
        t = time.monotonic()
        setup.prepare()
        print(f"registered {opts.pairs} buyer/seller pairs in {time.monotonic() - t:.0f} s")
        parties = [p.__dict__ for p in setup.parties]
    else:
        parties = [
            Party(
                mail_from=f"buyer{i:02d}@buyer.example",
                rcpt=f"bench{i:02d}seller@{DOMAIN}",
                from_header=f"Bench Buyer {i} <buyer{i:02d}@buyer.example>",
                order=f"BENCH-{i:04d}",
            ).__dict__
            for i in range(1, opts.pairs + 1)
        ]
    pairs_file = root / "pairs.json"
    pairs_file.write_text(json.dumps(parties), encoding="utf-8")
    if args.soak:
        assert setup is not None
        report["results"]["soak"] = soak(opts, setup, root, pairs_file, args.soak)
        return 0
    failed = False
    for shape in opts.shapes:
        for size in opts.sizes:
            results: dict[str, list[dict[str, Any]]] = {t: [] for t in opts.targets}
            report["results"][f"{size} {shape}"] = results
            for rnd in range(1, opts.runs + 1):
                print(f"[{size}, {shape} shape, round {rnd}/{opts.runs}]", flush=True)
                run_id = f"{size}r{rnd}{secrets.token_hex(3)}"  # the same bytes for every target
                for name in opts.targets:
                    workdir = root / f"{size}-{shape}-{rnd}-{name}"
                    result, run_notes = run_target(
                        name, opts, setup, workdir, size, pairs_file, run_id, shape
                    )
                    result["notes"] = run_notes
                    results[name].append(result)
                    failed = failed or bool(result["failed"] or result.get("missing"))
                    print("  " + describe_run(name, result), flush=True)
                    for note in run_notes:
                        print(f"           {note}")
            print_table(size, opts, results, shape)
    if failed:
        print("\n!! some messages failed or went missing: see the !! lines above")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
