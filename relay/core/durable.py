"""Writing a file so that it survives a crash, once written: archive copies, Maildir
deliveries, keys.

The data goes to a temporary file, written in full and fsynced, which is then
renamed into place; the directory is fsynced so that the rename itself is on disk.
A reader sees the old file or the whole new one, never a part.

``write_new`` is the cheaper form for a file that nothing reads until a later
commit refers to it (the archive's copies): it is created under its final,
unique name and fsynced, without a rename, and the directory's fsync is left to
the caller (``sync_dir``), who can make one for several files.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: Path, data: bytes, *, mode: int = 0o640, tmp: Path | None = None) -> None:
    """Write ``data`` to ``path`` (parent directories created); ``tmp`` is where it
    is written first, by default next to ``path`` (Maildir wants it in ``tmp/``)."""
    tmp = tmp or path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _write_synced(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), data)
    os.replace(tmp, path)
    sync_dir(path.parent)


def write_new(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Create ``path`` (which must not exist) with ``data``, fsynced; its parent
    directory must exist, and is not fsynced (``sync_dir``)."""
    _write_synced(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), data)


def _write_synced(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open ``fd``, fsync it and close it."""
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    """fsync a directory, so that the names created in it are on disk."""
    dirfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
