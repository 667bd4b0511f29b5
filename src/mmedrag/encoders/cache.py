"""Embedding cache keyed by (encoder id, content hash), in one SQLite file per encoder.

Re-indexing unchanged content costs nothing; a resumed ingest re-uses what was embedded.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    return Path(os.environ.get("MMEDRAG_CACHE", Path.home() / ".cache" / "mmedrag"))


def content_hash(item: str | bytes) -> str:
    data = item.encode("utf-8") if isinstance(item, str) else item
    return hashlib.sha1(data).hexdigest()


class EmbeddingCache:
    """Get-or-compute vectors for keys; thread-safe; ``None`` directory disables caching.

    Example:
        >>> import tempfile
        >>> cache = EmbeddingCache(tempfile.mkdtemp(), "toy")
        >>> cache.get_or_compute(["a"], lambda keys: np.ones((len(keys), 2), "float32")).shape
        (1, 2)
    """

    def __init__(self, directory: str | Path | None, encoder_id: str) -> None:
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if directory is not None:
            path = Path(directory)
            path.mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_id)
            self._db = sqlite3.connect(str(path / f"{safe}.sqlite"), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")

    def get_or_compute(self, keys: list[str],
                       compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """Vectors for ``keys`` (content hashes); ``compute`` gets the indices of misses."""
        found: dict[int, np.ndarray] = {}
        if self._db is not None and keys:
            with self._lock:
                for start in range(0, len(keys), 500):
                    chunk = keys[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk).fetchall()
                    by_key = {k: np.frombuffer(v, dtype=np.float32) for k, v in rows}
                    for offset, key in enumerate(chunk):
                        if key in by_key:
                            found[start + offset] = by_key[key]
        missing = [i for i in range(len(keys)) if i not in found]
        if missing:
            computed = np.asarray(compute(missing), dtype=np.float32)
            for row, index in enumerate(missing):
                found[index] = computed[row]
            if self._db is not None:
                with self._lock:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO emb VALUES (?, ?)",
                        [(keys[i], found[i].tobytes()) for i in missing])
                    self._db.commit()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[i] for i in range(len(keys))]).astype(np.float32)
