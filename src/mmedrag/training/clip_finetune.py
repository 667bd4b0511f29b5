"""Fine-tune an open_clip model (BiomedCLIP, UniMed-CLIP, ...) on image–report pairs.

Same objective as the tower (symmetric InfoNCE, learnable temperature = the model's own
``logit_scale``), same by-case validation split, checkpoints, resume and early stopping on
validation recall. Needs ``open-clip-torch`` (the ``clip`` extra) and the model's weights locally
or from the hub; ``pretrained=None`` with a plain architecture name builds random weights (tests).

Example:
    >>> finetune_open_clip("pairs.jsonl", "out/clip",
    ...     "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import MmedragError, UsageError, optional_import
from mmedrag.ingest.labelled import Row, read_rows, split_rows
from mmedrag.ir_metrics import rank_by_similarity, retrieval_metrics
from mmedrag.training.objectives import info_nce, positive_matrix


@dataclass
class ClipTrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.1
    patience: int = 3
    seed: int = 0
    monitor: str = "R@5"


def load_open_clip(model: str, pretrained: str | None) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) from a hub id, an architecture + pretrained tag/file."""
    open_clip = optional_import("open_clip", extra="clip", package="open-clip-torch")
    try:
        if model.startswith("hf-hub:"):
            net, preprocess = open_clip.create_model_from_pretrained(model)
        else:
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
        return net, preprocess, open_clip.get_tokenizer(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with the model named
        raise MmedragError(f"cannot load open_clip model {model!r}: {exc}") from exc


def _embed(net: Any, preprocess: Any, tokenizer: Any,
           rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from mmedrag.ingest.images import load_image

    net.eval()
    images, texts = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            batch = rows[start:start + 32]
            pix = torch.stack([preprocess(load_image(r.image)) for r in batch])
            images.append(torch.nn.functional.normalize(net.encode_image(pix), dim=-1).numpy())
            tok = tokenizer([r.text for r in batch])
            texts.append(torch.nn.functional.normalize(net.encode_text(tok), dim=-1).numpy())
    return np.concatenate(images), np.concatenate(texts)


def clip_recall(net: Any, preprocess: Any, tokenizer: Any, rows: list[Row]) -> dict[str, float]:
    """Image→report recall among the rows' distinct reports (hit: identical text)."""
    image_emb, text_emb = _embed(net, preprocess, tokenizer, rows)
    first = {}
    for i, r in enumerate(rows):
        first.setdefault(r.text, i)
    unique = list(first)
    docs = text_emb[[first[t] for t in unique]]
    rankings = rank_by_similarity(image_emb, docs, unique, 10)
    return retrieval_metrics(rankings, [{r.text} for r in rows])


def _step(net: Any, preprocess: Any, tokenizer: Any, batch: list[Row], opt: Any) -> float:
    import torch

    from mmedrag.ingest.images import load_image

    pix = torch.stack([preprocess(load_image(r.image)) for r in batch])
    img = torch.nn.functional.normalize(net.encode_image(pix), dim=-1)
    txt = torch.nn.functional.normalize(net.encode_text(tokenizer([r.text for r in batch])), dim=-1)
    loss = info_nce(img, txt, net.logit_scale.exp().clamp(max=100),
                    positive_matrix([r.text for r in batch]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


def finetune_open_clip(manifest: str | Path, out_dir: str | Path, model: str,
                       pretrained: str | None = None, domain: str | None = None,
                       domain_field: str = "domain", text_field: str | None = None,
                       split_field: str | None = None, val_fraction: float = 0.1,
                       config: ClipTrainConfig | None = None, resume: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """Fine-tune both towers; ``best.pt`` / ``last.pt`` in ``out_dir``; returns a summary."""
    import torch
    from tqdm.auto import tqdm

    cfg = config or ClipTrainConfig()
    rows = read_rows(manifest, text_field=text_field, require_text=True)
    if domain:
        rows = [r for r in rows if str(r.fields.get(domain_field, "")) == domain]
    if not rows:
        raise UsageError(f"{manifest}: no rows for domain {domain!r}")
    train, val = (split_rows(rows, split_field=split_field) if split_field
                  else split_rows(rows, val_fraction=val_fraction, seed=cfg.seed))
    net, preprocess, tokenizer = load_open_clip(model, pretrained)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad": 0, "history": []}
    if resume and (out / "last.pt").exists():
        payload = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        state = payload["state"]
    began = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(state["epoch"], cfg.epochs):
        if state["bad"] >= cfg.patience:
            break
        net.train()
        order = rng.permutation(len(train))
        batches = [[train[i] for i in order[s:s + cfg.batch_size]]
                   for s in range(0, len(order), cfg.batch_size)]
        bar = tqdm(batches, disable=not progress, desc=f"clip epoch {epoch + 1}", unit="batch")
        losses = [_step(net, preprocess, tokenizer, b, opt) for b in bar if len(b) > 1]
        metrics = clip_recall(net, preprocess, tokenizer, val)
        state["history"].append({"epoch": epoch + 1, "loss": float(np.mean(losses)), **metrics})
        state["epoch"] = epoch + 1
        if metrics[cfg.monitor] > state["best"]:
            state.update(best=metrics[cfg.monitor], best_epoch=epoch + 1, bad=0,
                         best_metrics=metrics)
            torch.save(net.state_dict(), out / "best.pt")
        else:
            state["bad"] += 1
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state},
                   out / "last.pt")
    (out / "config.json").write_text(json.dumps(
        {"format": "mmedrag-open-clip/1", "model": model, "pretrained": pretrained,
         "domain": domain, "train": asdict(cfg), "val": state.get("best_metrics", {})}, indent=1))
    return {"path": str(out), "domain": domain, "train_pairs": len(train), "val_pairs": len(val),
            "best_epoch": state["best_epoch"], "val": state.get("best_metrics", {}),
            "seconds": round(time.perf_counter() - began, 1), "history": state["history"]}
