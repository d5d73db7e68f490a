"""Fixtures shared by the suites.

Every test that uses the ``database_url`` fixture, and so every test that uses
``config``, ``relay`` or ``parties``, runs twice: on SQLite, in the test's own
directory, and on PostgreSQL, in a database created for the test on
127.0.0.1:5432 (a copy of one migrated once per run) and dropped after it.  The
PostgreSQL case is skipped, with the reason, only when no server answers there.
Tests marked ``sqlite_only``, or listed in ``SQLITE_ONLY_MODULES`` and
``SQLITE_ONLY_TESTS``, run on SQLite alone.  ``pg_url`` gives a test an empty
PostgreSQL database of its own (tests/test_postgres.py, tests/test_cluster.py).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from sqlalchemy import make_url

from relay import campaigns
from relay.app import Relay
from relay.core import clock
from relay.core.config import DatabaseConfig, LimitsConfig, RelayConfig
from relay.delivery.dkim_sign import generate_rsa_key
from relay.storage.db import Database
from tests.browser import browser, chromium  # noqa: F401  (fixtures of the browser tests)
from tests.helpers import Parties, Sink, make_config, register, start_sink

BACKENDS = ("sqlite", "postgresql")

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"

SQLITE_ONLY_MODULES = {
    # The relay's handling of every corpus message, not of the database: one
    # backend is enough, and 68 more throwaway databases would cost half a minute.
    "tests.test_corpus",
}
SQLITE_ONLY_TESTS: set[str] = set()


class PostgresServer:
    """An administrative connection to the test server, to create and drop databases."""

    def __init__(self, admin: psycopg.Connection[tuple[object, ...]]) -> None:
        self.admin = admin
        self.template: str | None = None

    @classmethod
    def connect(cls) -> PostgresServer:
        return cls(
            psycopg.connect(
                host=PG_HOST,
                port=PG_PORT,
                user=PG_USER,
                dbname="postgres",
                connect_timeout=3,
                autocommit=True,
            )
        )

    @contextmanager
    def throwaway_database(self, *, migrated: bool = False) -> Iterator[str]:
        """A new database, as a SQLAlchemy URL; dropped on exit, connections or not.

        Empty, or ``migrated``: a copy of a database that has the relay's schema,
        which saves each test the relay's schema creation (a tenth of a second).
        """
        name = f"relay_test_{secrets.token_hex(6)}"
        template = f' TEMPLATE "{self._template()}"' if migrated else ""
        self.admin.execute(f'CREATE DATABASE "{name}"{template}')
        try:
            yield url_of(name)
        finally:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _template(self) -> str:
        """The migrated database the others are copied from: made once per run."""
        if self.template is None:
            name = f"relay_template_{secrets.token_hex(6)}"
            self.admin.execute(f'CREATE DATABASE "{name}"')
            self.template = name
            campaigns.install()  # its campaign tables too
            db = Database(DatabaseConfig(url=url_of(name)))
            try:
                db.migrate()
            finally:
                db.dispose()  # a template must have no connections when it is copied
        return self.template

    def close(self) -> None:
        if self.template is not None:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self.admin.close()


def url_of(database: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): run on SQLite only, not on PostgreSQL too"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses ``database_url`` on every backend it is meant for."""
    if "database_url" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__
    sqlite_only = (
        metafunc.definition.get_closest_marker("sqlite_only") is not None
        or module in SQLITE_ONLY_MODULES
        or f"{module}::{metafunc.function.__name__}" in SQLITE_ONLY_TESTS
    )
    backends = BACKENDS[:1] if sqlite_only else BACKENDS
    metafunc.parametrize("database_url", backends, indirect=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL server on PG_HOST:PG_PORT; the test is skipped if none answers."""
    try:
        server = PostgresServer.connect()
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        pytest.skip(f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT} ({reason})")
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    with postgres.throwaway_database() as url:
        yield url


@pytest.fixture
def pg_migrated_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database with the relay's schema, dropped afterwards."""
    with postgres.throwaway_database(migrated=True) as url:
        yield url


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test's database: ``sqlite`` or ``postgresql`` (see ``pytest_generate_tests``)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        url: str = request.getfixturevalue("pg_migrated_url")
        return url
    return f"sqlite:///{tmp_path / 'relay.db'}"


@pytest.fixture
def database_locked(config: RelayConfig) -> Callable[[], AbstractContextManager[None]]:
    """``with database_locked():`` another client holds what the relay needs to store
    a message: SQLite's write lock, or on PostgreSQL a lock on the message table that
    lets readers through, as SQLite's WAL mode does.  The relay's writes wait
    ``database.busy_timeout`` and give up."""
    url = make_url(config.database.url)

    @contextmanager
    def locked() -> Iterator[None]:
        if url.get_backend_name() == "sqlite":
            lite = sqlite3.connect(url.database or "", timeout=1)
            try:
                lite.execute("BEGIN EXCLUSIVE")
                yield
            finally:
                lite.rollback()
                lite.close()
            return
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database
        ) as pg:
            pg.execute("LOCK TABLE message IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                pg.rollback()

    return locked


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One RSA key for the whole run (key generation is the slow part) and its TXT value."""
    path = tmp_path_factory.mktemp("dkim") / "relay.key"
    return path, generate_rsa_key(path)


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await start_sink()
    yield s
    s.server.close()
    await s.server.wait_closed()


@pytest.fixture
def config(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> RelayConfig:
    return make_config(
        tmp_path, sink_port=sink.port, dkim_key=dkim_key[0], database_url=database_url
    )


@pytest_asyncio.fixture
async def relay(config: RelayConfig) -> AsyncIterator[Relay]:
    r = Relay(config)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def parties(relay: Relay) -> Parties:
    return register(relay)


@pytest.fixture(autouse=True)
def real_time() -> Iterator[None]:
    """Every test starts, and leaves, on real time (``relay.core.clock.advance`` moves it)."""
    clock.reset()
    yield
    clock.reset()


@pytest_asyncio.fixture
async def limited(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """Start relays with some limits changed: ``await limited(max_recipients=2)``
    (test_limits, test_guessing); each is stopped at the end of the test."""
    started: list[Relay] = []

    async def start(**limits: Any) -> tuple[Relay, Parties]:
        config = make_config(
            tmp_path,
            sink_port=sink.port,
            dkim_key=dkim_key[0],
            database_url=database_url,
            limits=LimitsConfig(**limits),
        )
        relay = Relay(config)
        await relay.start()
        started.append(relay)
        return relay, register(relay)

    yield start
    for relay in started:
        await relay.stop()
