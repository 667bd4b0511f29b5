"""One writer per index folder, across processes: an advisory ``flock`` on ``INDEX/.writer.lock``.

The lock is taken before the first write and held until the index is closed (or the process
dies: the kernel releases it, so a ``kill -9`` never leaves a stale lock). A second writer waits
up to ``wait`` seconds, then fails with a message naming the holder's pid. Readers (the server,
``mmedrag search``) never take it: SQLite's WAL lets them read while one process writes.

Example:
    >>> import tempfile
    >>> lock = WriterLock(tempfile.mkdtemp())
    >>> lock.acquire(); lock.held
    True
    >>> lock.release()
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from mmedrag.errors import MmedragError


class WriterBusy(MmedragError):
    """Another process holds the index's writer lock."""


class WriterLock:
    """Cross-process exclusive lock on a folder (POSIX ``flock``)."""

    def __init__(self, folder: str | Path, name: str = ".writer.lock") -> None:
        self.path = Path(folder) / name
        self._handle: int | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise WriterBusy when it stays taken."""
        if self._handle is not None:
            return
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
                    os.close(handle)
                    raise WriterBusy(
                        f"{self.path.parent}: another process (pid {holder or '?'}) is writing "
                        f"to this index; wait for it to finish or pass --wait SECONDS") from None
                time.sleep(0.1)
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None
