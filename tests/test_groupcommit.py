"""The group-commit writer: jobs queued together commit together, each in its
own savepoint; a failure never leaves a caller waiting."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from relay.core.config import DatabaseConfig
from relay.storage.db import Database, StorageUnavailable


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(DatabaseConfig(url=f"sqlite:///{tmp_path / 'g.db'}", busy_timeout=1))
    database.migrate()
    database.call(lambda s: s.execute(text("CREATE TABLE t (v INTEGER)")))
    return database


def insert(session: Session, value: int) -> int:
    session.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
    return value


def fail(session: Session, value: int) -> int:
    insert(session, value)
    raise ValueError("this job is wrong")


def values(db: Database) -> list[int]:
    return db.call(lambda s: [r[0] for r in s.execute(text("SELECT v FROM t ORDER BY v"))])


def test_a_failing_job_is_rolled_back_alone(db: Database) -> None:
    gate = threading.Event()
    group = db._group()
    first = group.submit(lambda s: gate.wait(5))  # holds the writer while the batch queues
    futures = [group.submit(insert, 1), group.submit(fail, 2), group.submit(insert, 3)]
    gate.set()
    assert first.result(5) is True
    assert futures[0].result(5) == 1
    with pytest.raises(ValueError):
        futures[1].result(5)
    assert futures[2].result(5) == 3
    assert values(db) == [1, 3]
    db.dispose()


def test_a_locked_database_fails_every_job_of_the_batch(db: Database, tmp_path: Path) -> None:
    blocker = sqlite3.connect(tmp_path / "g.db")
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        gate = threading.Event()
        group = db._group()
        group.submit(lambda s: gate.wait(5))
        futures = [group.submit(insert, n) for n in range(5)]
        gate.set()
        for future in futures:  # every one answered, none left waiting
            with pytest.raises(StorageUnavailable):
                future.result(10)
    finally:
        blocker.rollback()
        blocker.close()
    assert db.write(insert, 7) == 7
    assert values(db) == [7]
    db.dispose()
