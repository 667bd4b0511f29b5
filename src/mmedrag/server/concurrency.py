"""Making a read-only Index and a Pipeline safe to share between the server's worker threads.

The server never writes to its index. What is not thread-safe on the read path:

* encoders: Hugging Face fast tokenizers (inside sentence-transformers) have raised "Already
  borrowed" when one tokenizer is used from two threads at once (tokenizers#537), and encoding
  is CPU-bound anyway, so each encoder is wrapped in a lock;
* BM25 and encoders load lazily on first use, so they are loaded once before serving;
* a writer (``mmedrag index``) may commit while the server runs: the server opens the index
  read-only and ``Refresher`` picks up new rows (dense), a newly saved BM25 and index.json every
  ``refresh_seconds`` (2 s by default; ``POST /v1/admin/refresh`` does it at once);
* llama.cpp contexts are not thread-safe, so answering holds a lock around the generator
  (``AnswerGate``), with a bounded queue so a burst gets a prompt 503 rather than a pile-up.

SQLite connections in the embedded store are shared (``check_same_thread=False``) behind the
store's own lock.

Example:
    >>> import threading
    >>> locked = Locked([3, 1, 2], threading.Lock())
    >>> locked.count(1)
    1
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any


class Locked:
    """Proxy that calls every method of ``target`` while holding ``lock``."""

    def __init__(self, target: Any, lock: Any) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_lock", lock)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)


def guard_index(index: Any) -> Any:
    """Load the index's lazy parts now and put each encoder behind its own lock."""
    for attribute in ("_text_encoder", "_image_encoder"):
        public = attribute[1:]
        encoder = getattr(index, public)  # loads it
        if encoder is not None and not isinstance(encoder, Locked):
            setattr(index, attribute, Locked(encoder, threading.RLock()))
    if index.meta.get("bm25", True) and index.count() > 0:
        bm25 = index.bm25  # loads (memory-mapped; a reader never rebuilds) before any request
        index._bm25 = Locked(bm25, threading.RLock())
    return index


def refresh_index(index: Any) -> dict[str, int]:
    """Pick up what a writer committed (``Index.refresh``), keeping BM25 behind its lock."""
    result = index.refresh()
    bm25 = index._bm25
    if bm25 is not None and not isinstance(bm25, Locked):
        index._bm25 = Locked(bm25, threading.RLock())
    return result


class Refresher:
    """Calls ``refresh_index`` every ``interval`` seconds in a daemon thread until ``stop()``.

    Example:
        >>> refresher = Refresher(index, interval=2.0).start()     # doctest: +SKIP
    """

    def __init__(self, index: Any, interval: float) -> None:
        self.index = index
        self.interval = interval
        self._stop = threading.Event()
        self.last: dict[str, int] = {}
        self.errors = 0

    def start(self) -> Refresher:
        if self.interval > 0:
            threading.Thread(target=self._run, daemon=True, name="mmedrag-refresh").start()
        return self

    def _run(self) -> None:
        import logging
        import sqlite3

        while not self._stop.wait(self.interval):
            try:
                self.last = refresh_index(self.index)
            except sqlite3.ProgrammingError:  # the index was closed: nothing left to refresh
                return
            except Exception as exc:  # noqa: BLE001 - keep serving the last good state
                self.errors += 1
                logging.getLogger("mmedrag.server").warning("index refresh failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()


class Busy(Exception):
    """Too many requests already waiting for the generator."""


class AnswerGate:
    """One answer generated at a time; at most ``max_waiting`` requests queue behind it.

    Example:
        >>> gate = AnswerGate(max_waiting=2)
        >>> with gate.slot():
        ...     gate.waiting
        1
    """

    def __init__(self, max_waiting: int = 8) -> None:
        self.max_waiting = max_waiting
        self.waiting = 0
        self._count_lock = threading.Lock()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._count_lock:
            if self.waiting >= self.max_waiting:
                raise Busy(f"{self.waiting} answers are already queued; retry shortly")
            self.waiting += 1
        try:
            with self._lock:
                yield
        finally:
            with self._count_lock:
                self.waiting -= 1


def lazy(factory: Callable[[], Any]) -> Callable[[], Any]:
    """Thread-safe build-once: the first caller builds, the others wait and share the result."""
    lock = threading.Lock()
    box: list[Any] = []

    def get() -> Any:
        if not box:
            with lock:
                if not box:
                    box.append(factory())
        return box[0]

    return get
