"""Database engine, schema, and the two ways the relay reaches the database.

Sessions are synchronous (sqlmodel).  Reads go through ``db.call`` (in the
calling thread) or ``await db.run(fn, ...)`` (in a worker thread, so that the
SMTP server's event loop never waits on SQL).  The hot path's writes go through
``db.write`` / ``await db.awrite``: one writer thread per process takes every
write queued meanwhile and commits them together (group commit), each in its
own savepoint, so a failing one is rolled back alone.  Twenty concurrent
sessions then cost one commit, not twenty that queue for SQLite's single write
lock, and a write transaction lasts only as long as its INSERTs and UPDATEs:
parsing, rewriting and archiving happen before it.

SQLite is opened in WAL mode with ``synchronous=FULL``: a commit is on disk when
it returns, which is what lets us answer 250 (README,
"What senders are told").  The writer's
transactions start with ``BEGIN IMMEDIATE``: they take the write lock at once
(waiting up to ``busy_timeout`` for another process's writer) instead of
failing later on a stale read snapshot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Insert, event, insert, inspect, make_url, text
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, SQLModel, create_engine, select

from relay.core.config import DatabaseConfig
from relay.storage import models

log = logging.getLogger("relay.db")

SCHEMA_VERSION = 9

MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE rule_hit ADD COLUMN location VARCHAR NOT NULL DEFAULT ''"],
    3: [
        "CREATE INDEX IF NOT EXISTS ix_message_sender_created"
        " ON message (envelope_from, created_at)"
    ],
    4: ["ALTER TABLE message ADD COLUMN trace_id VARCHAR"],
    5: [  # deleting a message checks the notices that point at it (retention)
        "CREATE INDEX IF NOT EXISTS ix_message_about_message_id ON message (about_message_id)"
    ],
    6: [],  # brand campaigns: new tables only, which create_all makes
    7: [],  # the HTTP API's keys: a new table
    8: [],  # webhooks: the outbox, endpoints and deliveries, new tables
    9: [],  # the console's users and sessions, and the decisions' log: new tables
}
"""Version → the statements that bring the previous version to it."""

P = ParamSpec("P")
T = TypeVar("T")


def insert_row(session: Session, row: SQLModel) -> int:
    """INSERT one model row without the ORM's unit of work; returns its new id.

    For rows that nothing reads back in the same transaction: a plain INSERT
    costs a fraction of ``session.add`` plus a flush.  The model still supplies
    the defaults and the validation.  (The hottest paths skip the model too:
    ``inserted_id`` with a statement built once and the values as a dict.)"""
    name = str(getattr(row, "__tablename__"))  # noqa: B009
    statement = _INSERTS.get(name)
    if statement is None:
        statement = _INSERTS[name] = insert(SQLModel.metadata.tables[name])
    return inserted_id(session.connection(), statement, row.model_dump(exclude={"id"}))


_INSERTS: dict[str, Insert] = {}
"""One INSERT per table, built on first use: executed with the values as
parameters, it is compiled once, not constructed and cache-keyed per row."""


def inserted_id(conn: Connection, statement: Insert, values: Mapping[str, Any]) -> int:
    """Execute an INSERT built once (``insert(table)``) with ``values``; returns
    the new row's id."""
    result: CursorResult[Any] = conn.execute(statement, values)
    key = result.inserted_primary_key
    return int(key[0]) if key else 0


class StorageUnavailable(Exception):
    """The database could not be reached or did not answer in time."""


def make_engine(config: DatabaseConfig, *, writer: bool = False) -> Engine:
    """The engine; ``writer`` makes SQLite transactions ``BEGIN IMMEDIATE``, with
    savepoints that work (pysqlite's own transaction handling breaks them)."""
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
            if writer:
                dbapi_conn.isolation_level = None  # we say BEGIN ourselves

        if writer:

            @event.listens_for(engine, "begin")
            def _begin_immediate(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            _plain_savepoints(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # No JIT: the relay's queries are short, and PostgreSQL's JIT compiler,
        # which starts above a cost estimate that correlated subqueries easily
        # pass, took 0.9 s to compile the 70 ms response-time query.
        connect_args = {
            "connect_timeout": max(1, int(config.busy_timeout)),
            "options": f"-c lock_timeout={int(config.busy_timeout * 1000)} -c jit=off",
        }
    engine = create_engine(
        url, pool_pre_ping=True, pool_timeout=config.busy_timeout, connect_args=connect_args
    )
    if writer:
        _plain_savepoints(engine)
    return engine


def _plain_savepoints(engine: Engine) -> None:
    """The group-commit writer's savepoints as plain SQL, not compiled statements.

    Every write job runs in a savepoint of the batch's transaction; SQLAlchemy
    builds and compiles ``SAVEPOINT``/``RELEASE SAVEPOINT`` anew for each one (the
    names change, so its statement cache never hits): about as much CPU as a
    message's own INSERTs.  The names are SQLAlchemy's own (``sa_savepoint_N``)."""
    dialect = engine.dialect

    def savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"SAVEPOINT {name}")

    def release(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {name}")

    def rollback_to(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")

    dialect.do_savepoint = savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = release  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = rollback_to  # type: ignore[method-assign]


def _sqlite_lock_path(config: DatabaseConfig) -> Path | None:
    """The file the writers of several processes queue on, for an SQLite file."""
    if not config.url.startswith("sqlite"):
        return None
    path = make_url(config.url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path + ".writer-lock")


def _ensure_sqlite_dir(url: str) -> None:
    path = make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def migrate(engine: Engine) -> None:
    """Create the schema, or bring an older one up to ``SCHEMA_VERSION``.

    Each future schema change is a step here, keyed by the version it produces;
    ``create_all`` only ever adds missing tables and indexes.

    The tables are those of SQLModel's metadata: this package's, and those of
    the packages above it that define their own (``relay.campaigns``), which
    storage does not import.  Those are known once their models are imported:
    ``relay.campaigns.install()``, which every entry point calls before it
    migrates.  A table missing from one migration is created by the next that
    knows it (the version steps do not depend on it).
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
        self._writer: GroupCommit | None = None
        self._writer_lock = threading.Lock()

    def _group(self) -> GroupCommit:
        with self._writer_lock:
            if self._writer is None:
                self._writer = GroupCommit(
                    make_engine(self.config, writer=True), lock_path=_sqlite_lock_path(self.config)
                )
            return self._writer

    def write(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run ``fn(session, ...)`` in the writer thread; returns once it is committed."""
        return self._group().submit(fn, *args, **kw).result()

    async def awrite(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``write`` for coroutines: the event loop waits for nothing."""
        return await asyncio.wrap_future(self._group().submit(fn, *args, **kw))

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
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self.engine.dispose()


class GroupCommit:
    """A writer thread that commits every write queued while it was busy, together.

    Each job runs in a savepoint of the shared transaction: an exception rolls
    back that job alone and is raised to its caller; the others still commit.
    A failed commit fails every job of the batch (StorageUnavailable): none of
    their senders has been told 250.
    """

    MAX_BATCH = 64

    def __init__(self, engine: Engine, *, lock_path: Path | None = None) -> None:
        self.engine = engine
        self._lock = open(lock_path, "a+b") if lock_path is not None else None  # noqa: SIM115
        """SQLite only: the writers of all relay processes on this database take
        turns on this file lock.  SQLite's own wait for its write lock polls with
        sleeps of up to 100 ms; ``flock`` hands over the moment it is released.
        Opened here, in the process that writes (each worker makes its own writer
        after the fork), so that processes never share one lock description."""
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay-db-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any, **kw: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put(_Job(fn, args, kw, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout=60)
        self.engine.dispose()
        if self._lock is not None:
            self._lock.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        if self._lock is None:
            self._commit_batch(batch)
            return
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._commit_batch(batch)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _commit_batch(self, batch: list[_Job]) -> None:
        done: list[tuple[_Job, Any]] = []
        failed: list[tuple[_Job, BaseException]] = []
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                for job in batch:
                    if not job.future.set_running_or_notify_cancel():
                        continue
                    # Each job starts with an empty identity map: a row that an
                    # earlier job of the batch changed with a Core statement is
                    # read again, not taken stale from the map.
                    session.expunge_all()
                    try:
                        with session.begin_nested():
                            result = job.fn(session, *job.args, **job.kw)
                            session.flush()
                    except (OperationalError, InterfaceError, PoolTimeout):
                        raise  # the connection or the lock: the whole batch fails
                    except DBAPIError as job_error:  # this job's statement only
                        failed.append((job, StorageUnavailable(_describe(job_error))))
                    except BaseException as job_error:  # raised to its caller
                        failed.append((job, job_error))
                    else:
                        done.append((job, result))
                session.commit()
        except (OperationalError, InterfaceError, DBAPIError, PoolTimeout) as exc:
            self._fail_all(batch, StorageUnavailable(_describe(exc)))
            return
        except BaseException as other:  # never leave a caller waiting
            log.exception("group commit failed")
            self._fail_all(batch, other)
            return
        for job, result in done:
            job.future.set_result(result)
        for job, error in failed:
            job.future.set_exception(error)

    @staticmethod
    def _fail_all(batch: list[_Job], error: BaseException) -> None:
        """Every caller of the batch gets ``error``, including those whose job the
        failure came before (still pending: they must not wait forever)."""
        for job in batch:
            if job.future.done():
                continue
            if job.future.running() or job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)


class _Job:
    __slots__ = ("args", "fn", "future", "kw")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
        future: concurrent.futures.Future[Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.kw = kw
        self.future = future


def _describe(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).strip().splitlines()[0] if str(orig or exc).strip() else repr(exc)
