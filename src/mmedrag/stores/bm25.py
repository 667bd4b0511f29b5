"""Sparse BM25 retrieval over record texts with bm25s (stemmed, English stop words).

bm25s has no incremental add, so the writer rebuilds the index explicitly at the end of an
ingest or a deletion (``Index.finalize``) and in ``mmedrag repair``; a reader (the server,
``search``) never rebuilds: it loads what was saved, memory-mapped (the sparse matrix and the
ids, ``ids.npy``), so a PubMed-sized BM25 costs page cache, not resident memory, and a stale
one is reported (``Index.bm25_status``) rather than rebuilt mid-request. The scoring variant
(``lucene`` by default; ``robertson`` is the classic Okapi BM25 of rank_bm25) and k1/b are saved
with the index, so a reopened index scores as it was built.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import UsageError, optional_import

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


def _stemmer():  # noqa: ANN202
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:
        return None


class BM25Index:
    """BM25 over (id, text) pairs, saved in a folder.

    Example:
        >>> import tempfile
        >>> bm = BM25Index(tempfile.mkdtemp())
        >>> bm.build(["a", "b"], ["pleural effusion on the left", "normal brain MRI"])
        >>> bm.search("effusion", k=1)[0][0]
        'a'
    """

    def __init__(self, path: str | Path, method: str = "lucene", k1: float = 1.5,
                 b: float = 0.75) -> None:
        if method not in METHODS:
            raise UsageError(f"BM25 method must be one of {', '.join(METHODS)}, got {method!r}")
        self.path = Path(path)
        self.method, self.k1, self.b = method, float(k1), float(b)
        self._model = None
        self._ids: Any = []  # list, or a memory-mapped array of UTF-8 bytes (ids.npy)
        self._stemmer = _stemmer()
        self.built_for = -1
        self.stamp = self.stamp_of(self.path)
        if (self.path / "bm25.json").exists():
            self._load()

    @staticmethod
    def stamp_of(path: Path) -> tuple[int, int] | None:
        """(inode, mtime) of a saved BM25's sidecar: changes whenever a writer saves anew."""
        try:
            info = (path / "bm25.json").stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns

    def _tokenize(self, texts: list[str]):  # noqa: ANN202
        bm25s = optional_import("bm25s", extra="core")
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, show_progress=False)

    def build(self, ids: list[str], texts: list[str]) -> None:
        """Index ``texts`` under ``ids`` (replacing what was there) and save atomically."""
        if len(ids) != len(texts):
            raise UsageError(f"BM25 build: {len(ids)} ids but {len(texts)} texts")
        bm25s = optional_import("bm25s", extra="core")
        model = bm25s.BM25(method=self.method, k1=self.k1, b=self.b)
        tokens = self._tokenize(texts) if texts else None
        # a corpus of stop words only has an empty vocabulary: nothing to score, no model
        usable = tokens is not None and bool(tokens.vocab)
        if usable:
            model.index(tokens, show_progress=False)
        self._model = model if usable else None
        self._ids = list(ids)
        self.built_for = len(ids)
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if self._model is not None:
            self._model.save(str(tmp / "model"), show_progress=False)
        np.save(tmp / "ids.npy", np.asarray([i.encode("utf-8") for i in self._ids],
                                            dtype=bytes) if self._ids else np.zeros(0, "S1"))
        (tmp / "bm25.json").write_text(json.dumps({
            "ids": "ids.npy", "built_for": self.built_for, "method": self.method, "k1": self.k1,
            "b": self.b, "stemmer": self._stemmer is not None}))
        old = self.path.with_name(self.path.name + ".old")
        if old.exists():  # left by a crash between the two renames below
            shutil.rmtree(old)
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(tmp, self.path)
        if old.exists():
            shutil.rmtree(old)
        self.stamp = self.stamp_of(self.path)

    def _load(self) -> None:
        bm25s = optional_import("bm25s", extra="core")
        meta = json.loads((self.path / "bm25.json").read_text())
        ids = meta["ids"]  # a list in indexes saved before ids.npy
        if isinstance(ids, str):
            try:
                self._ids = np.load(self.path / ids, mmap_mode="r")
            except ValueError:  # an empty array cannot be mapped
                self._ids = np.load(self.path / ids)
        else:
            self._ids = ids
        self.built_for = meta["built_for"]
        self.method = meta.get("method", self.method)
        self.k1, self.b = float(meta.get("k1", self.k1)), float(meta.get("b", self.b))
        model_dir = self.path / "model"
        self._model = (bm25s.BM25.load(str(model_dir), mmap=True, show_progress=False)
                       if model_dir.exists() else None)

    def _id(self, row: int) -> str:
        value = self._ids[row]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (id, score) per query; documents scoring 0 are left out."""
        if self._model is None or len(self._ids) == 0 or k <= 0:
            return [[] for _ in queries]
        k = min(k, len(self._ids))
        tokens = self._tokenize(queries)
        docs, scores = self._model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        out = []
        for row_docs, row_scores in zip(np.asarray(docs), np.asarray(scores), strict=True):
            out.append([(self._id(int(d)), float(s))
                        for d, s in zip(row_docs, row_scores, strict=True) if s > 0])
        return out
