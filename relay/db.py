"""Database engine, schema and the one way coroutines reach the database.

Sessions are synchronous (sqlmodel); coroutines call ``await db.run(fn, ...)``,
which runs ``fn(session, ...)`` in a worker thread so that the SMTP server's event
loop never waits on SQL.  SQLite is opened in WAL mode with ``synchronous=FULL``:
a commit is on disk when it returns, which is what lets us answer 250 (SPEC §6).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import event, inspect, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, SQLModel, create_engine, select

from relay import models
from relay.config import DatabaseConfig

log = logging.getLogger("relay.db")

SCHEMA_VERSION = 2

MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE rulehit ADD COLUMN location VARCHAR NOT NULL DEFAULT ''"],
}
"""Version → the statements that bring the previous version to it."""

P = ParamSpec("P")
T = TypeVar("T")


class StorageUnavailable(Exception):
    """The database could not be reached or did not answer in time."""


def make_engine(config: DatabaseConfig) -> Engine:
    url = config.url
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(
            url, connect_args={"timeout": config.busy_timeout, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(config.busy_timeout * 1000)}")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": max(1, int(config.busy_timeout)),
            "options": f"-c lock_timeout={int(config.busy_timeout * 1000)}",
        }
    return create_engine(
        url, pool_pre_ping=True, pool_timeout=config.busy_timeout, connect_args=connect_args
    )


def _ensure_sqlite_dir(url: str) -> None:
    path = make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def migrate(engine: Engine) -> None:
    """Create the schema, or bring an older one up to ``SCHEMA_VERSION``.

    Each future schema change is a step here, keyed by the version it produces;
    ``create_all`` only ever adds missing tables and indexes.
    """
    fresh = not inspect(engine).has_table("schema_version")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        row = session.get(models.SchemaVersion, 1)
        current = row.version if row else (SCHEMA_VERSION if fresh else 0)
        if current > SCHEMA_VERSION:
            raise StorageUnavailable(
                f"database schema version {current} is newer than this relay ({SCHEMA_VERSION})"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS.get(version, []):
                session.execute(text(statement))
            log.info("database schema upgraded to version %s", version)
        if row is None:
            session.add(models.SchemaVersion(id=1, version=SCHEMA_VERSION))
        else:
            row.version = SCHEMA_VERSION
        session.commit()


class Database:
    """The engine plus helpers to use it from threads and coroutines."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.engine = make_engine(config)

    def migrate(self) -> None:
        """Create or upgrade the schema; safe when several processes start at once.

        Two processes that both find a table missing both try to create it, and
        one fails with "already exists" (or a duplicate schema_version row).
        ``create_all`` checks before it creates, so trying again converges.
        """
        for attempt in range(5):
            try:
                migrate(self.engine)
                return
            except (OperationalError, DBAPIError) as exc:
                text = str(exc).lower()
                racing = "already exists" in text or "unique" in text or "duplicate" in text
                if not racing or attempt == 4:
                    raise StorageUnavailable(_describe(exc)) from exc
                time.sleep(0.05 * (attempt + 1))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success; database errors become StorageUnavailable."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
                session.commit()
        except (OperationalError, DBAPIError, PoolTimeout) as exc:
            raise StorageUnavailable(_describe(exc)) from exc

    def call(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs) -> T:
        with self.session() as session:
            return fn(session, *args, **kw)

    async def run(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run ``fn(session, *args)`` in a thread, committed when it returns."""

        def job() -> T:
            return self.call(fn, *args, **kw)

        return await asyncio.to_thread(job)

    def schema_version(self) -> int | None:
        with self.session() as session:
            row = session.exec(select(models.SchemaVersion)).first()
            return row.version if row else None

    def dispose(self) -> None:
        self.engine.dispose()


def _describe(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).strip().splitlines()[0] if str(orig or exc).strip() else repr(exc)
