"""Sparse BM25 retrieval over record texts with bm25s (stemmed, English stop words).

bm25s has no incremental add, so the index is rebuilt from the records when their count changes
(``BM25Index.sync``); building ~41k chunks takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mmedrag.errors import optional_import


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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._model = None
        self._ids: list[str] = []
        self._stemmer = _stemmer()
        self.built_for = -1
        if (self.path / "bm25.json").exists():
            self._load()

    def _tokenize(self, texts: list[str]):  # noqa: ANN202
        bm25s = optional_import("bm25s", extra="core")
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, show_progress=False)

    def build(self, ids: list[str], texts: list[str]) -> None:
        bm25s = optional_import("bm25s", extra="core")
        model = bm25s.BM25()
        if texts:
            model.index(self._tokenize(texts), show_progress=False)
        self._model = model if texts else None
        self._ids = list(ids)
        self.built_for = len(ids)
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if self._model is not None:
            self._model.save(str(tmp / "model"))
        (tmp / "bm25.json").write_text(json.dumps({"ids": self._ids, "built_for": self.built_for}))
        old = self.path.with_name(self.path.name + ".old")
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(tmp, self.path)
        if old.exists():
            shutil.rmtree(old)

    def _load(self) -> None:
        bm25s = optional_import("bm25s", extra="core")
        meta = json.loads((self.path / "bm25.json").read_text())
        self._ids = meta["ids"]
        self.built_for = meta["built_for"]
        self._model = bm25s.BM25.load(str(self.path / "model")) if (self.path / "model").exists() else None

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (id, score) per query; documents scoring 0 are left out."""
        if self._model is None or not self._ids or k <= 0:
            return [[] for _ in queries]
        k = min(k, len(self._ids))
        tokens = self._tokenize(queries)
        docs, scores = self._model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        out = []
        for row_docs, row_scores in zip(np.asarray(docs), np.asarray(scores)):
            out.append([(self._ids[int(d)], float(s)) for d, s in zip(row_docs, row_scores) if s > 0])
        return out
