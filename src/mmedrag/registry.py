"""Lazy name -> "module:Class" registry, with "did you mean" errors.

Heavy backends (open_clip, Milvus, llama.cpp, transformers) import only when chosen.

Example:
    >>> from mmedrag.registry import REGISTRY
    >>> REGISTRY.names("selector")[:2]
    ['calibrated', 'fixed']
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from mmedrag.errors import UsageError

_BUILTIN: dict[str, dict[str, str]] = {
    "text_encoder": {
        "sentence-transformers": "mmedrag.encoders.text:SentenceTransformerEncoder",
        "hashing": "mmedrag.encoders.text:HashingTextEncoder",
    },
    # image encoders and image features share one namespace: a spec joins them with "+"
    # (mmedrag.encoders.features), for the index, the domain router and the tower alike
    "image_encoder": {
        "thumbnail": "mmedrag.encoders.image_text:ThumbnailImageEncoder",
        "open_clip": "mmedrag.encoders.image_text:OpenClipEncoder",
        "clip": "mmedrag.encoders.image_text:OpenClipEncoder",
        "transformers_image": "mmedrag.encoders.image_text:TransformersImageEncoder",
        "hf": "mmedrag.encoders.image_text:TransformersImageEncoder",
        "imagenet": "mmedrag.encoders.efficientnet:ImageNetFeatures",
        "handcrafted": "mmedrag.encoders.handcrafted:HandcraftedImageFeatures",
        "handcrafted-small": "mmedrag.encoders.handcrafted:SmallHandcraftedImageFeatures",
        "cnn": "mmedrag.encoders.cnn:CnnFeatures",
        "tower": "mmedrag.encoders.tower:TrainedTowerEncoder",
        "tower-trunk": "mmedrag.encoders.tower:TowerTrunkFeatures",
        "dual": "mmedrag.encoders.dual:DualEncoder",
    },
    "store": {
        "embedded": "mmedrag.stores.embedded:EmbeddedStore",
        "milvus": "mmedrag.stores.milvus:MilvusStore",
    },
    "retriever": {
        "dense": "mmedrag.retrieval.dense:DenseRetriever",
        "bm25": "mmedrag.retrieval.bm25:BM25Retriever",
        "hybrid": "mmedrag.retrieval.hybrid:HybridRetriever",
        "kg": "mmedrag.retrieval.kg:KGRetriever",
        "hyde": "mmedrag.retrieval.hyde:HydeRetriever",
        "image-text": "mmedrag.retrieval.image_text:ImageToTextRetriever",
    },
    "reranker": {
        "cross-encoder": "mmedrag.retrieval.rerank:CrossEncoderReranker",
        "mmr": "mmedrag.retrieval.rerank:MMRReranker",
        "none": "mmedrag.retrieval.rerank:IdentityReranker",
    },
    "selector": {
        "fixed": "mmedrag.selection.fixed:FixedKSelector",
        "gap": "mmedrag.selection.gap:GapSelector",
        "ratio": "mmedrag.selection.gap:RatioSelector",
        "calibrated": "mmedrag.selection.calibrated:CalibratedSelector",
    },
    "generator": {
        "openai": "mmedrag.generation.openai_compat:OpenAICompatGenerator",
        "transformers": "mmedrag.generation.transformers_local:TransformersGenerator",
        "llama-cpp": "mmedrag.generation.llama_cpp:LlamaCppGenerator",
        "echo": "mmedrag.generation.echo:EchoGenerator",
        "transformers-peft": "mmedrag.generation.transformers_peft:AdapterGenerator",
    },
}


class Registry:
    """Maps (kind, name) to a lazily imported class."""

    def __init__(self, entries: dict[str, dict[str, str]] | None = None) -> None:
        self._entries: dict[str, dict[str, str]] = {k: dict(v) for k, v in (entries or {}).items()}

    def register(self, kind: str, name: str, target: str) -> None:
        """Register ``target`` ("module:Class") under ``kind``/``name``."""
        if ":" not in target:
            raise UsageError(f"registry target must be 'module:Class', got {target!r}")
        self._entries.setdefault(kind, {})[name] = target

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries.get(kind, {}))

    def target(self, kind: str, name: str) -> str:
        if kind not in self._entries:
            raise UsageError(f"unknown component kind {kind!r}; kinds: {', '.join(sorted(self._entries))}")
        table = self._entries[kind]
        if name not in table:
            close = difflib.get_close_matches(name, table, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(table))})")
        return table[name]

    def get(self, kind: str, name: str) -> Any:
        """The class registered under ``kind``/``name`` (imported on first use)."""
        module_name, _, attr = self.target(kind, name).partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def create(self, kind: str, name: str, /, **kwargs: Any) -> Any:
        return self.get(kind, name)(**kwargs)

    def accepts(self, kind: str, name: str, parameter: str) -> bool:
        """Whether the component's constructor takes ``parameter`` (e.g. ``index``)."""
        import inspect

        return parameter in inspect.signature(self.get(kind, name)).parameters


REGISTRY = Registry(_BUILTIN)
