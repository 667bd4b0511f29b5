"""Domain-specific image→report retriever: train the tower, load it, and search an index with it.

The offline default aligns the project's small image tower to a FROZEN text encoder (MiniLM,
384-d), so an image query searches the index's existing text store. Fine-tuning an open_clip
model (BiomedCLIP etc.) lives in ``mmedrag.training.clip_finetune``.

Example:
    >>> summary = train_retriever("medpix/pairs.jsonl", "out/ct", domain="CT",
    ...                           domain_field="modality", split_field="split")  # doctest: +SKIP
    >>> encoder = TrainedTowerEncoder("out/ct")                                  # doctest: +SKIP
    >>> encoder.encode_images([image]).shape                                     # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.protocol import l2_normalise
from mmedrag.errors import IndexMismatchError, InputError, MmedragError, UsageError
from mmedrag.records import Hit, Query
from mmedrag.training.contrastive import PairSet, TowerTrainConfig, train_tower
from mmedrag.training.data import Row, preload_images, read_rows, split_rows

FORMAT = "mmedrag-tower/1"
MEMORY_K = 10  # neighbours and blend of the report prior, chosen on a split inside MedPix train
MEMORY_MIX = 0.5
MEMORY_TEMPERATURE = 0.05


def read_case_texts(path: str | Path, fields: tuple[str, ...] = ("findings", "diagnosis"),
                    key: str = "case_id") -> dict[str, str]:
    """Case id → joined case-level text (e.g. MedPix cases.jsonl findings + diagnosis)."""
    from mmedrag.ingest.jsonl import iter_jsonl

    out: dict[str, str] = {}
    for number, row in iter_jsonl(path):
        if key not in row:
            raise InputError("missing case id", path=str(path), line=number, field=key)
        text = " ".join(str(row.get(f) or "") for f in fields).strip()
        out[str(row[key])] = text[:2000]
    return out


def label_maps(rows: list[Row], fields: tuple[str, ...]) -> dict[str, list[str]]:
    """Sorted class names of each auxiliary label field present in the rows (≥ 2 classes)."""
    maps = {}
    for name in fields:
        values = sorted({str(r.fields.get(name) or "") for r in rows} - {""})
        if len(values) >= 2:
            maps[name] = values
    return maps


def encode_unique(text_encoder: Any, texts: list[str]) -> np.ndarray:
    """Encode each distinct text once (captions and case texts repeat across images)."""
    unique = sorted(set(texts))
    vectors = text_encoder.encode_texts(unique)
    where = {t: i for i, t in enumerate(unique)}
    return vectors[[where[t] for t in texts]]


EXTRA_FEATURES = ("handcrafted", "imagenet")


@functools.lru_cache(maxsize=1)
def _imagenet() -> Any:
    from mmedrag.encoders.efficientnet import ImageNetFeatures

    return ImageNetFeatures()


def extra_features(images: list[Any], spec: str = "handcrafted") -> np.ndarray:
    """Fixed per-image features the tower takes in beside its pixels: ``handcrafted`` (grey
    histograms, gradients, shape; 468 values) and/or ``imagenet`` (the frozen ImageNet
    EfficientNet-Lite0's 1,280 pooled features), joined with ``+``."""
    from mmedrag.training.image_features import HandcraftedImageFeatures

    parts = []
    for part in spec.split("+"):
        if part == "handcrafted":
            parts.append(HandcraftedImageFeatures(native=False).encode_images(images))
        elif part == "imagenet":
            parts.append(_imagenet().encode_images(images))
        else:
            raise UsageError(f"unknown tower extra features {part!r} "
                             f"({' | '.join(EXTRA_FEATURES)}, joined with +)")
    return np.concatenate(parts, axis=1)


def saved_extra_spec(meta: dict[str, Any]) -> str:
    """The extra-feature spec a saved tower was trained with (older towers: hand-crafted)."""
    if not int(meta["tower"].get("extra_dim", 0)):
        return ""
    return str(meta.get("train", {}).get("extra_features", "handcrafted"))


def build_pair_set(rows: list[Row], text_encoder: Any, size: int, labels: dict[str, list[str]],
                   case_texts: dict[str, str] | None = None, extra: str = "") -> PairSet:
    """Preload pixels and embed the reports (and case texts) of ``rows``."""
    texts = [r.text for r in rows]
    vectors = encode_unique(text_encoder, texts)
    case_vectors = None
    if case_texts:
        joined = [case_texts.get(r.group) or r.text for r in rows]
        case_vectors = encode_unique(text_encoder, joined)
    codes = {name: [values.index(r.fields[name]) if r.fields.get(name) in values else -1
                    for r in rows] for name, values in labels.items()}
    fixed = extra_features([r.image for r in rows], extra) if extra else None
    return PairSet(preload_images(rows, size), texts, vectors, [r.group for r in rows], codes,
                   case_vectors, fixed)


def default_text_encoder() -> Any:
    from mmedrag.encoders.text import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


def train_retriever(manifest: str | Path, out_dir: str | Path, domain: str | None = None,
                    domain_field: str = "domain", text_field: str | None = None,
                    split_field: str | None = None, val_fraction: float = 0.1,
                    subset: tuple[str, str] | None = None,
                    aux_fields: tuple[str, ...] = ("modality", "plane", "location"),
                    case_text: str | Path | None = None, config: TowerTrainConfig | None = None,
                    text_encoder: Any = None, resume: bool = False,
                    progress: bool = True) -> dict[str, Any]:
    """Train the image tower on a manifest's image–report pairs (optionally one domain).

    Validation is ``split_field``'s dev rows, or a by-case/patient split of the training rows.
    ``subset=(field, value)`` keeps only matching rows first (e.g. ``("split", "train")`` to
    train and validate inside the official training split, leaving dev untouched).
    Writes ``tower.pt`` + ``config.json`` (loadable by TrainedTowerEncoder) and checkpoints.
    """
    cfg = config or TowerTrainConfig()
    rows = read_rows(manifest, text_field=text_field, require_text=True)
    if subset:
        rows = [r for r in rows if str(r.fields.get(subset[0], "")) == subset[1]]
    if domain:
        rows = [r for r in rows if str(r.fields.get(domain_field, "")) == domain]
    if not rows:
        raise UsageError(f"{manifest}: no rows with {domain_field}={domain!r}"
                         + (f" and {subset[0]}={subset[1]!r}" if subset else ""))
    if split_field:
        train_rows, val_rows = split_rows(rows, split_field=split_field)
    else:
        train_rows, val_rows = split_rows(rows, val_fraction=val_fraction, seed=cfg.seed)
    encoder = text_encoder or default_text_encoder()
    labels = label_maps(train_rows, aux_fields)
    cases = read_case_texts(case_text) if case_text else None
    train = build_pair_set(train_rows, encoder, cfg.size, labels, cases, cfg.extra_features)
    val = build_pair_set(val_rows, encoder, cfg.size, labels, extra=cfg.extra_features)
    text_cfg = encoder.config() if hasattr(encoder, "config") else {"name": encoder.name}
    meta = {"domain": domain, "domain_field": domain_field, "labels": labels,
            "text_encoder": {**text_cfg, "name_id": encoder.name, "version": encoder.version,
                             "dim": encoder.dim}}
    result = train_tower(train, val, out_dir, cfg, {k: len(v) for k, v in labels.items()}, meta,
                         resume=resume, progress=progress)
    export_tower(result.path, out_dir, memory=train)
    return {"path": str(out_dir), "domain": domain, "train_pairs": len(train),
            "val_pairs": len(val), "best_epoch": result.best_epoch, "val": result.best,
            "seconds": round(result.seconds, 1), "history": result.history}


def export_tower(checkpoint: str | Path, out_dir: str | Path,
                 memory: PairSet | None = None) -> None:
    """Write the loadable ``tower.pt`` + ``config.json`` from a training checkpoint.

    With ``memory`` (the training pairs), also ``memory.npz``: the trained tower's embeddings of
    the training images beside their report vectors, for the nearest-neighbour report prior.
    """
    import torch

    from mmedrag.training.contrastive import embed_pixels
    from mmedrag.training.tower import ImageTower

    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    out = Path(out_dir)
    torch.save(payload["model"], out / "tower.pt")
    if memory is not None:
        model = ImageTower(**payload["tower"])
        model.load_state_dict(payload["model"])
        images = embed_pixels(model, memory.pixels, extra=memory.extra)
        np.savez_compressed(out / "memory.npz", images=images.astype(np.float16),
                            texts=memory.text_vectors.astype(np.float16))
    config = {"format": FORMAT, "tower": payload["tower"], "size": payload["config"]["size"],
              "epoch": payload["epoch"], "train": payload["config"],
              "val": payload["state"].get("best_metrics", {}), **payload["meta"]}
    (out / "config.json").write_text(json.dumps(config, indent=1))


class TrainedTowerEncoder:
    """The trained image tower as an Encoder; its text side is the frozen text encoder.

    Example:
        >>> enc = TrainedTowerEncoder("models/medpix-tower")            # doctest: +SKIP
        >>> enc.encode_images(["scan.png"]) @ enc.encode_texts(["axial CT"]).T  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        import torch

        from mmedrag.training.tower import ImageTower

        self.path = Path(path)
        cfg_path = self.path / "config.json"
        if not cfg_path.exists() or not (self.path / "tower.pt").exists():
            raise UsageError(f"{self.path}: not a trained tower (config.json + tower.pt missing)")
        self.meta = json.loads(cfg_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise MmedragError(f"{cfg_path}: unknown tower format {self.meta.get('format')!r}")
        self.model = ImageTower(**self.meta["tower"])
        self.model.load_state_dict(torch.load(self.path / "tower.pt", map_location="cpu"))
        self.model.eval()
        self.size = int(self.meta["size"])
        self.extra_spec = saved_extra_spec(self.meta)
        text = self.meta.get("text_encoder", {})
        self.text_name = str(text.get("name_id", ""))
        self.name = f"tower:{self.path.name}"
        self.version = f"{FORMAT}-e{self.meta.get('epoch')}"
        self.dim = int(self.meta["tower"]["out_dim"])
        self.domain = self.meta.get("domain")
        self._text_encoder: Any = None
        self.memory_mix = float(self.meta.get("memory_mix", MEMORY_MIX))
        self.memory_k = int(self.meta.get("memory_k", MEMORY_K))
        self._memory: tuple[np.ndarray, np.ndarray] | None = None
        if (self.path / "memory.npz").exists() and self.memory_mix > 0:
            with np.load(self.path / "memory.npz") as data:
                self._memory = (data["images"].astype(np.float32),
                                data["texts"].astype(np.float32))

    def _with_memory(self, queries: np.ndarray) -> np.ndarray:
        """Blend each query with the reports of its nearest training images (softmax-weighted)."""
        if self._memory is None:
            return queries
        images, texts = self._memory
        sims = queries @ images.T
        k = min(self.memory_k, len(images))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.exp((np.take_along_axis(sims, top, 1) - 1) / MEMORY_TEMPERATURE)
        prior = l2_normalise(np.einsum("qk,qkd->qd", weights, texts[top]))
        return l2_normalise((1 - self.memory_mix) * queries + self.memory_mix * prior)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        from mmedrag.training.contrastive import embed_pixels

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        images = list(images)
        extra = extra_features(images, self.extra_spec) if self.extra_spec else None
        queries = l2_normalise(embed_pixels(self.model, preload_images(images, self.size),
                                            extra=extra))
        return self._with_memory(queries)

    def encode_features(self, images: list[Any]) -> np.ndarray:
        """The tower's 512-d trunk features (before projection): for linear probes."""
        import torch

        images = list(images)
        pixels = preload_images(images, self.size)
        extra = extra_features(images, self.extra_spec) if self.extra_spec else None
        self.model.eval()
        with torch.no_grad():
            tensor = torch.from_numpy(pixels).float().div_(255).unsqueeze(1)
            extra_t = None if extra is None else torch.from_numpy(extra)
            return self.model.embed(tensor, extra_t).numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if self._text_encoder is None:
            from mmedrag.registry import REGISTRY

            text = self.meta.get("text_encoder", {})
            options: dict[str, Any] = {"model": text["model"]} if "model" in text else {}
            if text.get("name") == "hashing":
                options = {"dim": int(text["dim"])}
            self._text_encoder = REGISTRY.create("text_encoder", text.get("name", "hashing"),
                                                 **options)
        return self._text_encoder.encode_texts(texts)

    def save(self, directory: str | Path) -> None:
        import shutil

        Path(directory).mkdir(parents=True, exist_ok=True)
        for name in ("tower.pt", "config.json"):
            shutil.copy2(self.path / name, Path(directory) / name)

    def config(self) -> dict[str, Any]:
        return {"name": "tower", "path": str(self.path), "dim": self.dim, "version": self.version}


class ImageToTextRetriever:
    """Image query → report texts of the index's text store, via the trained tower.

    Example:
        >>> spec = index.extra("image_text")                                 # doctest: +SKIP
        >>> retriever = ImageToTextRetriever.from_index(index, spec)         # doctest: +SKIP
        >>> retriever.retrieve(Query(image="scan.png"), k=5)                 # doctest: +SKIP
    """

    name = "image-text"

    def __init__(self, index: Any, encoder: TrainedTowerEncoder) -> None:
        text_name = getattr(index.text_encoder, "name", "")
        other_text = bool(encoder.text_name) and text_name != encoder.text_name
        if other_text or index.text_encoder.dim != encoder.dim:
            raise IndexMismatchError(
                f"tower {encoder.path} was aligned to text encoder {encoder.text_name!r} "
                f"({encoder.dim}-d) but index {index.dir} uses {text_name!r} "
                f"({index.text_encoder.dim}-d)")
        self.index = index
        self.encoder = encoder

    @classmethod
    def from_index(cls, index: Any, spec: dict[str, Any]) -> ImageToTextRetriever:
        """Build from ``index.extra("image_text")`` = ``{"path": ..., "domain": ...}``."""
        if not spec or "path" not in spec:
            raise UsageError(f"{index.dir}: image_text entry has no 'path'")
        return cls(index, TrainedTowerEncoder(spec["path"]))

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        from mmedrag.retrieval.dense import query_filters

        if query.image is None:
            return []
        vector = self.encoder.encode_images([query.image])
        hits = self.index.search_vectors(vector, k, space="text", filters=query_filters(query))[0]
        for hit in hits:
            hit.retriever = self.name
        return hits


def config_dict(cfg: TowerTrainConfig) -> dict[str, Any]:
    return asdict(cfg)
