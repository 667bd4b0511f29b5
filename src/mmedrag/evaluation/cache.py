"""A generation cache on disk, and a generator wrapper that uses it.

The key is a SHA-256 of the chat messages, the images (their pixels) and the generator's
configuration plus the generation parameters, so a re-run, a resumed run or a second ablation
that builds the same prompt costs nothing. SQLite (WAL) makes each write durable when it
returns and safe from several threads.

Example:
    >>> from mmedrag.generation.echo import EchoGenerator
    >>> cache = GenerationCache(":memory:")
    >>> gen = CachingGenerator(EchoGenerator(), cache)
    >>> first = gen.generate([{"role": "user", "content": "Is it normal?"}])
    >>> gen.generate([{"role": "user", "content": "Is it normal?"}]).text == first.text
    True
    >>> gen.hits, gen.misses
    (1, 1)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from mmedrag.records import Generation


def image_digest(image: Any) -> str:
    """SHA-1 of an image's pixels (PIL), bytes, or a path's bytes."""
    if image is None:
        return "-"
    if hasattr(image, "tobytes"):
        digest = hashlib.sha1(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()
    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha1(bytes(image)).hexdigest()
    return hashlib.sha1(Path(image).read_bytes()).hexdigest()


def generator_signature(generator: Any) -> dict[str, Any]:
    """What identifies a generator's behaviour: its config() when it has one, else name/model."""
    if hasattr(generator, "config") and callable(generator.config):
        try:
            return {"config": generator.config()}
        except TypeError:
            pass
    return {"class": type(generator).__name__, "name": getattr(generator, "name", ""),
            "model": str(getattr(generator, "model", "")),
            "model_path": str(getattr(generator, "model_path", "")),
            "sees_images": bool(getattr(generator, "sees_images", False))}


def cache_key(messages: list[dict[str, Any]], images: list[Any] | None, signature: dict[str, Any],
              params: Any) -> str:
    payload = {"messages": messages, "images": [image_digest(i) for i in images or []],
               "generator": signature,
               "params": dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params}
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def is_thread_safe(generator: Any) -> bool:
    """``thread_safe`` when the generator says so; HTTP (OpenAI-compatible) clients are."""
    declared = getattr(generator, "thread_safe", None)
    if declared is not None:
        return bool(declared)
    return "openai" in type(generator).__module__


class GenerationCache:
    """key → Generation, in one SQLite file (or ``":memory:"``).

    Example:
        >>> cache = GenerationCache(":memory:")
        >>> cache.put("k", Generation(text="yes")); cache.get("k").text
        'yes'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, "
                         "value TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> Generation | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
        return Generation(**json.loads(row[0])) if row else None

    def put(self, key: str, generation: Generation) -> None:
        value = json.dumps(dataclasses.asdict(generation))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?)", (key, value))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachingGenerator:
    """Wraps a generator: answers from the cache when it can, stores every new generation.

    ``last_hit`` (per thread) tells the caller whether the latest call was served from cache;
    cached generations keep the seconds they originally took, so timing reports stay honest.

    Example:
        >>> from mmedrag.generation.echo import EchoGenerator
        >>> CachingGenerator(EchoGenerator(), GenerationCache(":memory:")).thread_safe
        False
    """

    def __init__(self, inner: Any, cache: GenerationCache,
                 extra_signature: dict[str, Any] | None = None) -> None:
        self.inner = inner
        self.cache = cache
        self.name = getattr(inner, "name", type(inner).__name__)
        self.model = getattr(inner, "model", self.name)
        self.sees_images = bool(getattr(inner, "sees_images", False))
        self.thread_safe = is_thread_safe(inner)
        self._signature = {**generator_signature(inner), **(extra_signature or {})}
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def last_hit(self) -> bool:
        return bool(getattr(self._local, "hit", False))

    @property
    def last_seconds(self) -> float:
        """Seconds the latest generation took when it was first computed."""
        return float(getattr(self._local, "seconds", 0.0))

    def config(self) -> dict[str, Any]:
        return self._signature

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: Any = None) -> Generation:
        key = cache_key(messages, images, self._signature, params)
        cached = self.cache.get(key)
        if cached is not None:
            with self._count_lock:
                self.hits += 1
            self._local.hit, self._local.seconds = True, cached.seconds
            return cached
        generation = self.inner.generate(messages, images, params)
        self.cache.put(key, generation)
        with self._count_lock:
            self.misses += 1
        self._local.hit, self._local.seconds = False, generation.seconds
        return generation

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

