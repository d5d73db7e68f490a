"""Several relay processes on one host: ``relay serve --workers N``.

One Python process fills one core: the GIL lets only one thread parse, rewrite
or sign at a time.  So the relay runs as N whole relays (SMTP server and
delivery worker each, with their own event loop), forked from one supervisor.
Each binds the same port with SO_REUSEPORT and the kernel spreads incoming
connections across them; they share the database, whose queue leases already
keep two workers off the same delivery (``relay.delivery.spool``).

The supervisor does what must happen once: it creates or upgrades the schema,
checks the archive and creates a missing DKIM key before any worker starts, so
that N processes never race to do it. It serves the metrics endpoint, adding up
the workers' values (prometheus-client's multiprocess mode). It forwards SIGHUP
(reload the rules) and SIGTERM/SIGINT (drain and stop) to the workers and
restarts a worker that dies, unless workers keep dying at start (a port in use,
say): then it stops all of them and exits non-zero rather than spin.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from relay import campaigns, console
from relay.api.server import ApiServer
from relay.app import Relay
from relay.campaigns.unsubscribe import UnsubscribeEndpoint
from relay.core import loops, metrics
from relay.core.config import RelayConfig
from relay.core.pidfile import PidFile
from relay.ops.endpoint import Endpoint
from relay.storage.archive import Archive
from relay.storage.db import Database

log = logging.getLogger("relay.workers")

STOP_GRACE = 40.0
"""Seconds a worker gets to drain its sessions and deliveries after SIGTERM."""
EARLY_DEATH = 5.0
"""A worker that exits sooner than this after its start died "at start"."""
MAX_EARLY_DEATHS = 3


def _run_worker(config: RelayConfig, index: int, metrics_dir: Path | None) -> None:
    """A worker process: one whole relay until SIGTERM."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # the supervisor's handlers are not ours
    # A SIGHUP forwarded before the relay installs its handler would kill the
    # worker; ignored, it loses nothing, as the rules are read after this.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log.info("worker %d started (pid %d)", index, os.getpid())
    if metrics_dir is not None:
        metrics.use_multiprocess(metrics_dir)
    _stop_when_orphaned()
    try:
        relay = Relay(
            config, reuse_port=True, serve_metrics=False, serve_unsubscribe=False, serve_api=False
        )
        loops.run(relay.serve_forever())
    except Exception as exc:  # one line in the log, not a traceback per restart
        log.error("worker %d cannot run: %s", index, exc)
        sys.exit(1)


def _stop_when_orphaned(interval: float = 1.0) -> None:
    """A worker whose supervisor died (SIGKILL, OOM) drains and stops, instead of
    serving on unsupervised with nobody to forward signals or restart it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.error("the supervisor (pid %d) is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="relay-orphan-watch", daemon=True).start()


def _prepare(config: RelayConfig) -> None:
    """The once-per-host start-up work, done before any worker exists (which
    inherit, with the fork, the campaigns installed here)."""
    campaigns.install()
    db = Database(config.database)
    try:
        db.migrate()
    finally:
        db.dispose()  # a forked child must not share the parent's connections
    Archive(config.archive.path).check_writable()
    Relay(config).signer()  # creates the DKIM key if it is missing


def _reserve_port(config: RelayConfig) -> tuple[RelayConfig, socket.socket]:
    """Bind the port here first, with SO_REUSEPORT and never listening: a port
    another program holds is one clear error before any worker starts, port 0
    becomes one port for all workers, and a restarted worker can bind it too."""
    family = socket.AF_INET6 if ":" in config.smtp.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.smtp.host, config.smtp.port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen on {config.smtp.host}:{config.smtp.port}: {exc.strerror}"
        ) from None
    port = sock.getsockname()[1]
    smtp = config.smtp.model_copy(update={"port": port})
    return config.model_copy(update={"smtp": smtp}), sock


class Supervisor:
    def __init__(self, config: RelayConfig, workers: int) -> None:
        self.config = config
        self.count = workers
        self.context = multiprocessing.get_context("fork")
        self.procs: dict[int, BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.stopping = False
        self.early_deaths = 0
        self.metrics_dir: Path | None = None
        """Where the workers keep their metric values (prometheus-client's
        multiprocess mode), when ``metrics.listen`` is set."""

    def _start(self, index: int) -> None:
        proc = self.context.Process(
            target=_run_worker,
            args=(self.config, index, self.metrics_dir),
            name=f"relay-worker-{index}",
        )
        proc.start()
        self.procs[index] = proc
        self.started[index] = time.monotonic()

    def _signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, sig)

    def _on_stop(self, _sig: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        log.info("forwarding SIGHUP to the workers")
        self._signal_all(signal.SIGHUP)

    def run(self) -> int:
        """Start the workers and look after them until SIGTERM/SIGINT; the exit status."""
        _prepare(self.config)
        self.config, placeholder = _reserve_port(self.config)
        endpoint: Endpoint | None = None
        unsubscribe: UnsubscribeEndpoint | None = None
        api: ApiServer | None = None
        try:
            address = self.config.campaigns.unsubscribe.address
            if address is not None:
                unsubscribe = UnsubscribeEndpoint(Database(self.config.database), *address)
                unsubscribe.start()
                # The workers' links lead to the supervisor's endpoint.
                self.config = self.config.with_unsubscribe_url(unsubscribe.base_url)
            api_address = self.config.api.address
            if api_address is not None:  # one API for all workers, as the endpoints
                api = ApiServer(
                    self.config,
                    Database(self.config.database),
                    *api_address,
                    extend=console.install,
                    fast_loop=False,  # the workers are forked from here (relay.core.loops)
                )
                api.start()
            if self.config.metrics.address is not None:
                self.metrics_dir = Path(tempfile.mkdtemp(prefix="relay-metrics-"))
                registry = CollectorRegistry()
                MultiProcessCollector(registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
                endpoint = Endpoint(self.config, Database(self.config.database), registry)
                endpoint.start()
            for index in range(self.count):
                self._start(index)
            signal.signal(signal.SIGTERM, self._on_stop)
            signal.signal(signal.SIGINT, self._on_stop)
            signal.signal(signal.SIGHUP, self._on_hup)
            log.info(
                "%d workers share %s:%d", self.count, self.config.smtp.host, self.config.smtp.port
            )
            status = self._watch()
        finally:
            self._stop_all()
            placeholder.close()
            if endpoint is not None:
                endpoint.stop()
                endpoint.db.dispose()
            if unsubscribe is not None:
                unsubscribe.stop()
                unsubscribe.db.dispose()
            if api is not None:
                api.stop()
                api.db.dispose()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return status

    def _watch(self) -> int:
        while not self.stopping:
            sentinels = [p.sentinel for p in self.procs.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            for index, proc in list(self.procs.items()):
                if proc.is_alive() or self.stopping:
                    continue
                proc.join()
                lived = time.monotonic() - self.started[index]
                log.error("worker %d (pid %s) exited with %s", index, proc.pid, proc.exitcode)
                if lived < EARLY_DEATH:
                    self.early_deaths += 1
                    if self.early_deaths >= MAX_EARLY_DEATHS:
                        log.error("workers keep dying at start; stopping")
                        return 1
                    time.sleep(1.0)
                self._start(index)
        return 0

    def _stop_all(self) -> None:
        log.info("stopping %d workers", len(self.procs))
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker pid %s did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join()


def serve(config: RelayConfig, workers: int) -> int:
    """``relay serve``: one relay in this process, or a supervisor of ``workers``.

    The pid file (``smtp.pid_file``) is written first, so that a second
    ``relay serve`` on the same configuration is refused before it touches
    anything, and removed when this returns (``relay.core.pidfile``)."""
    pid_file = PidFile(config.smtp.pid_file)
    pid_file.acquire()
    # ``relay reload`` may signal as soon as the pid file names us: until the
    # handler is installed, a SIGHUP must not end the process (the rules are
    # read after this point anyway).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log.info("pid %d written to %s", os.getpid(), pid_file.path)
    try:
        if workers <= 1:
            loops.run(Relay(config).serve_forever())
            return 0
        return Supervisor(config, workers).run()
    finally:
        pid_file.release()
