"""The pid file of ``relay serve``, which ``relay reload`` reads (README, "Command line").

``relay serve`` writes its process id to ``smtp.pid_file`` and holds an
exclusive lock (``flock``) on that file for as long as it runs.  The lock, not
the file's presence, is what says that a relay is running: the kernel drops it
when the process ends however it ends, so a file left behind by ``kill -9`` is
known to be stale (nobody holds its lock) and is replaced, and a stale pid that
the system has since given to another program is never signalled.

Under ``--workers N`` the pid is the supervisor's, which forwards SIGHUP to its
workers.  The workers close the copy of the locked file they inherit at fork,
so the lock is the supervisor's alone and goes with it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_ATTEMPTS = 10
"""How often ``acquire`` tries the lock before it concludes a relay holds it: a
``relay reload`` holds a shared lock for an instant while it checks the file."""
LOCK_PAUSE = 0.05


class PidFileError(Exception):
    """The pid file cannot be used; ``str()`` is the one-line message."""


class PidFile:
    """The pid file as ``relay serve`` holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._owner: int | None = None
        """The process that wrote the file: only it removes the file."""

    def acquire(self) -> None:
        """Write this process's id and lock the file; raises PidFileError when a
        running relay holds it, or when it cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PidFileError(
                f"cannot create the pid file {self.path}: {exc.strerror or exc}"
            ) from None
        for _ in range(LOCK_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise PidFileError(
                    f"cannot write the pid file {self.path}: {exc.strerror or exc}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                time.sleep(LOCK_PAUSE)
                continue
            if not _is_at(fd, self.path):
                # A relay that was stopping removed the file between our open and
                # our lock: the file we locked is not the one others will read.
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            os.fsync(fd)
            self._fd, self._owner = fd, os.getpid()
            _held.append(self)
            return
        pid = _read_pid(self.path)
        running = f" (pid {pid})" if pid is not None else ""
        raise PidFileError(
            f"relay serve is already running{running}: its pid file {self.path} is locked;"
            " stop it first (`relay reload` reloads its filter rules)"
        )

    def release(self) -> None:
        """Remove the file and drop the lock (in the process that wrote it only)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self in _held:
            _held.remove(self)
        if os.getpid() == self._owner and _is_at(fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(fd)

    def _forget(self) -> None:
        """In a forked child: close the inherited descriptor, leaving the parent's lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_held: list[PidFile] = []


def _close_in_child() -> None:
    for pid_file in list(_held):
        pid_file._forget()
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _is_at(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def running_pid(path: Path) -> int:
    """The pid of the ``relay serve`` holding ``path``; raises PidFileError when
    there is no pid file, or when no relay holds it (stale, or unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PidFileError(
            f"no pid file {path}: relay serve is not running with this configuration"
        ) from None
    except OSError as exc:
        raise PidFileError(f"cannot read the pid file {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    pid = int(text) if text.isdigit() and int(text) > 0 else None
    if not held:
        was = f" (pid {pid})" if pid is not None else ""
        raise PidFileError(
            f"stale pid file {path}{was}: relay serve is not running"
            " (the next relay serve replaces the file)"
        )
    if pid is None:
        raise PidFileError(f"the pid file {path} holds no pid yet: relay serve is starting")
    return pid
