"""The archive's copies: durable before anything refers to them, with as few
directory fsyncs as that allows."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from relay.storage.archive import Archive


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each ``os.fsync`` synced: "file" or "dir" (the real fsync still runs)."""
    seen: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return seen


def test_a_copy_alone_is_synced_with_its_directory(tmp_path: Path, fsyncs: list[str]) -> None:
    archive = Archive(tmp_path)
    rel = archive.store(b"one", "received")
    assert archive.read(rel) == b"one"
    assert fsyncs == ["file", "dir"]


def test_a_batch_syncs_each_directory_once_on_the_way_out(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    archive = Archive(tmp_path)
    with archive.batch():
        rels = [archive.store(f"copy {i}".encode(), "delivered") for i in range(3)]
        with archive.batch():  # nested: the outer batch syncs
            rels.append(archive.store(b"inner", "delivered"))
        assert fsyncs == ["file"] * 4
    assert fsyncs == ["file"] * 4 + ["dir"]
    assert [archive.read(r) for r in rels] == [b"copy 0", b"copy 1", b"copy 2", b"inner"]
    assert len({r for r in rels}) == 4
    # outside the batch again, a copy syncs its directory itself
    archive.store(b"after", "received")
    assert fsyncs[-2:] == ["file", "dir"]


def test_a_failed_batch_syncs_nothing_more_and_says_why(tmp_path: Path, fsyncs: list[str]) -> None:
    archive = Archive(tmp_path)
    with pytest.raises(RuntimeError, match="refused"), archive.batch():
        archive.store(b"orphan", "received")
        raise RuntimeError("refused")
    assert fsyncs == ["file"]  # no commit will refer to the orphan: no directory fsync


def test_a_day_directory_removed_behind_its_back_is_made_again(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    rel = archive.store(b"first", "received")
    day = (tmp_path / rel).parent
    (tmp_path / rel).unlink()
    day.rmdir()
    assert archive.read(archive.store(b"second", "received")) == b"second"
