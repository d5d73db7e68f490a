"""Is the relay able to do its job?  The database and the downstream, checked live.

``/healthz`` and ``relay status`` both ask ``check``: the database answers a
query, and the downstream takes mail (the smarthost greets with 220, or the
Maildir is a writable directory).  Each check has a short timeout, so a hung
peer gives a clear "not reachable" instead of a hung probe.  The checks block:
callers run them in a thread (the HTTP endpoint's own thread, or the CLI).
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text

from relay.core import clock
from relay.core.config import RelayConfig
from relay.delivery import spool
from relay.storage.db import Database

TIMEOUT = 3.0
"""Seconds each check may take."""


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Health:
    database: Check
    downstream: Check
    queue_depth: int | None = None
    """Pending deliveries (None when the database did not answer)."""
    queue_oldest_age_seconds: float | None = None
    """Seconds since the oldest pending delivery was queued."""

    @property
    def ok(self) -> bool:
        return self.database.ok and self.downstream.ok

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        return {"ok": self.ok, **data}


def check(config: RelayConfig, db: Database) -> Health:
    """Both checks, and the queue's depth when the database answers."""
    database = check_database(db)
    depth: int | None = None
    oldest: float | None = None
    if database.ok:
        try:
            depth, oldest = queue_stats(db)
        except Exception as exc:  # the database went away in between
            database = Check(False, _reason(exc))
    return Health(database, check_downstream(config), depth, oldest)


def queue_stats(db: Database) -> tuple[int, float | None]:
    """Pending deliveries and the age of the oldest, in seconds."""
    depth, oldest = db.call(spool.pending_summary)
    return depth, _age(oldest)


def _age(since: datetime | None) -> float | None:
    if since is None:
        return None
    return max(0.0, (clock.now() - clock.as_utc(since)).total_seconds())


def check_database(db: Database) -> Check:
    try:
        db.call(lambda s: s.execute(text("SELECT 1")).scalar_one())
    except Exception as exc:
        return Check(False, _reason(exc))
    return Check(True, f"{db.engine.dialect.name} answers")


def check_downstream(config: RelayConfig) -> Check:
    delivery = config.delivery
    if delivery.mode == "maildir":
        path = delivery.maildir
        if not path.exists():
            # created on the first delivery, if its parent lets us
            parent = next((p for p in path.parents if p.exists()), None)
            if parent is not None and os.access(parent, os.W_OK | os.X_OK):
                return Check(True, f"Maildir {path} (created on the first delivery)")
            return Check(False, f"Maildir {path} cannot be created")
        if path.is_dir() and os.access(path, os.W_OK | os.X_OK):
            return Check(True, f"Maildir {path} is writable")
        return Check(False, f"Maildir {path} is not a writable directory")
    host, port = delivery.smtp.host, delivery.smtp.port
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            greeting = _read_reply(sock)
            sock.sendall(b"QUIT\r\n")
    except OSError as exc:
        return Check(False, f"smarthost {host}:{port} not reachable: {_reason(exc)}")
    if not greeting.startswith("220"):
        return Check(False, f"smarthost {host}:{port} greeted with {greeting[:100]!r}")
    return Check(True, f"smarthost {host}:{port} greets with 220")


def _read_reply(sock: socket.socket) -> str:
    """The greeting's last line (a multi-line 220 ends with "220 ")."""
    data = b""
    while b"\n" not in data or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 16384:
            break
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-1] if lines else ""


def _reason(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    return text_[0][:200] if text_ else type(exc).__name__
