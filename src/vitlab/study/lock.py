"""One coordinator per study directory, and one process per run directory.

`fcntl.flock` locks belong to an open file; the kernel drops them when the process dies, however it
dies, so a SIGKILLed coordinator never leaves a stale lock behind.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from ..errors import UserError
from ..io import NOFOLLOW
from ..safepath import within

STUDY_LOCK = ".lock"
RUN_LOCK = ".lock"


class DirLock:
    """An exclusive flock on `DIR/.lock`; `holder` is the pid written into it by the owner."""

    def __init__(self, directory: str | Path, name: str = STUDY_LOCK, root: str | Path | None = None):
        """`root`: a directory the lock must stay inside with no link on the way (a storage's root: its
        run folders may have been planted as links); checked at each acquisition (safepath.inside)."""
        self.path = Path(directory) / name
        self.root = root
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        if self.root is not None:
            within(self.root, self.path, "storage")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def acquire(self, timeout: float | None = None, poll_s: float = 0.2) -> bool:
        """Block until the lock is ours (or `timeout` seconds pass: False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_study(study_dir: str | Path) -> DirLock:
    """The study's coordinator lock, or a one-line UserError when another coordinator holds it."""
    lock = DirLock(study_dir, STUDY_LOCK)
    if not lock.try_acquire():
        raise UserError(f"{study_dir}: another vitlab coordinator (pid {lock.holder()}) is running this study; "
                        "wait for it or stop it first")
    return lock
