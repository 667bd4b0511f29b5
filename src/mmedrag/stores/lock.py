"""One writer per index folder, across processes: an advisory ``flock`` on ``INDEX/.writer.lock``.

The lock is taken before the first write and held until the index is closed (or the process
dies: the kernel releases it, so a ``kill -9`` never leaves a stale lock). A second writer
process waits up to ``wait`` seconds, then fails with a message naming the holder's pid. Within
one process the lock is shared (counted) between the Index objects of a folder. Reading never
takes it (SQLite's WAL lets readers read while one process writes); a CLI reader that finds BM25
stale takes it only to rebuild BM25, and the server, opened read-only, never does.

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
import threading
import time
from pathlib import Path

from mmedrag.errors import MmedragError


class WriterBusy(MmedragError):
    """Another process holds the index's writer lock."""


# this process's held locks: resolved lock path -> [file descriptor, holders]
_HELD: dict[Path, list[int]] = {}
_HELD_LOCK = threading.Lock()


class WriterLock:
    """Cross-process exclusive lock on a folder (POSIX ``flock``), shared within a process."""

    def __init__(self, folder: str | Path, name: str = ".writer.lock") -> None:
        self.path = Path(folder) / name
        self._handle: int | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise WriterBusy when another process
        keeps it."""
        if self._handle is not None:
            return
        key = self.path.resolve()
        with _HELD_LOCK:
            if key in _HELD:  # another Index of this process holds it: share
                _HELD[key][1] += 1
                self._handle = _HELD[key][0]
                return
            self._handle = self._take(wait)
            _HELD[key] = [self._handle, 1]

    def _take(self, wait: float) -> int:
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
        return handle

    def release(self) -> None:
        if self._handle is None:
            return
        key = self.path.resolve()
        with _HELD_LOCK:
            entry = _HELD.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _HELD[key]
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                    os.close(entry[0])
            self._handle = None
