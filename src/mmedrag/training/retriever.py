"""Training the domain-specific image→report retriever (the tower); the query-time parts are
:class:`mmedrag.encoders.tower.TrainedTowerEncoder` and
:class:`mmedrag.retrieval.image_text.ImageToTextRetriever`.

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

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.pixels import preload_images
from mmedrag.encoders.tower import FORMAT, ImageTower, embed_pixels, extra_features
from mmedrag.errors import InputError, UsageError
from mmedrag.ingest.labelled import Row, read_rows, split_rows
from mmedrag.training.contrastive import PairSet, TowerTrainConfig, train_tower


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

    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    out = Path(out_dir)
    torch.save(payload["model"], out / "tower.pt")
    if memory is not None:
        model = ImageTower(**payload["tower"])
        model.load_state_dict(payload["model"])
        images = embed_pixels(model, memory.pixels, extra=memory.extra)
        np.savez_compressed(out / "memory.npz", images=images.astype(np.float16),
                            texts=memory.text_vectors.astype(np.float16))
    config = {"format": FORMAT, "feature_names": 2, "tower": payload["tower"],
              "size": payload["config"]["size"],
              "epoch": payload["epoch"], "train": payload["config"],
              "val": payload["state"].get("best_metrics", {}), **payload["meta"]}
    (out / "config.json").write_text(json.dumps(config, indent=1))
