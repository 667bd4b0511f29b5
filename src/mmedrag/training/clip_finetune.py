"""Fine-tune a CLIP-family dual encoder (transformers CLIP/SigLIP/PubMedCLIP, or open_clip
BiomedCLIP/UniMed-CLIP) as the domain's image→report retriever.

Same objective as the tower (symmetric InfoNCE over in-batch image–report similarities, identical
reports are positives of each other, the temperature is the model's own learnable
``logit_scale``), same by-case validation split, validation recall before training (epoch 0) and
after each epoch, the best epoch kept, early stopping, and ``last.pt`` to resume. The best model is
written in its library's own format (``OUT/model``, see :mod:`mmedrag.encoders.dual`) beside
``OUT/mmedrag.json``; :class:`mmedrag.encoders.dual.DualEncoder` loads it at query time.

Example:
    >>> finetune_dual("pairs.jsonl", "out/ct", "hf:flaviagiammarino/pubmed-clip-vit-base-patch32",
    ...               domain="CT", domain_field="modality", split_field="split")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.dual import FORMAT, META_FILE, MODEL_DIR, load_dual_model, parse_dual_spec
from mmedrag.errors import MmedragError, UsageError
from mmedrag.ingest.labelled import Row, read_rows, split_rows
from mmedrag.ir_metrics import rank_by_similarity, retrieval_metrics
from mmedrag.training.objectives import info_nce, positive_matrix

MONITORS = ("R@1", "R@5", "R@10", "MRR", "nDCG@10")


@dataclass
class ClipTrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.1
    patience: int = 3
    seed: int = 0
    monitor: str = "R@5"

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise UsageError(f"monitor {self.monitor!r}: one of {', '.join(MONITORS)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise UsageError("epochs must be ≥ 1 and batch_size ≥ 2 (in-batch negatives)")


def _embed(model: Any, rows: list[Row], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    import torch

    model.net.eval()
    images, texts = [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            images.append(model.image_features([r.image for r in part]).float().cpu().numpy())
            texts.append(model.text_features([r.text for r in part]).float().cpu().numpy())
    return np.concatenate(images), np.concatenate(texts)


def dual_recall(model: Any, rows: list[Row]) -> dict[str, float]:
    """Image→report recall among the rows' reports, one per image (hit: its own or an identical
    report): the figure the tower reports, and ``eval retrieval`` over an index of these rows."""
    image_emb, text_emb = _embed(model, rows)
    ids = [str(i) for i in range(len(rows))]
    by_text: dict[str, set[str]] = {}
    for i, r in zip(ids, rows, strict=True):
        by_text.setdefault(" ".join(r.text.split()).lower(), set()).add(i)
    rankings = rank_by_similarity(image_emb, text_emb, ids, 10)
    relevant = [by_text[" ".join(r.text.split()).lower()] for r in rows]
    return {k: round(float(v), 4) for k, v in retrieval_metrics(rankings, relevant).items()}


def _step(model: Any, batch: list[Row], opt: Any) -> float:
    img = model.image_features([r.image for r in batch])
    txt = model.text_features([r.text for r in batch])
    loss = info_nce(img, txt, model.logit_scale(), positive_matrix([r.text for r in batch]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.item())


def select_rows(manifest: str | Path, domain: str | None, domain_field: str,
                text_field: str | None, subset: tuple[str, str] | None) -> list[Row]:
    rows = read_rows(manifest, text_field=text_field, require_text=True)
    if subset:
        rows = [r for r in rows if str(r.fields.get(subset[0], "")) == subset[1]]
    if domain:
        rows = [r for r in rows if str(r.fields.get(domain_field, "")) == domain]
    if not rows:
        raise UsageError(f"{manifest}: no rows with {domain_field}={domain!r}"
                         + (f" and {subset[0]}={subset[1]!r}" if subset else ""))
    return rows


def finetune_dual(manifest: str | Path, out_dir: str | Path, model: str,
                  pretrained: str | None = None, domain: str | None = None,
                  domain_field: str = "domain", text_field: str | None = None,
                  split_field: str | None = None, val_fraction: float = 0.1,
                  subset: tuple[str, str] | None = None, config: ClipTrainConfig | None = None,
                  resume: bool = False, progress: bool = True,
                  device: str = "cpu") -> dict[str, Any]:
    """Fine-tune both towers of ``model`` (``hf:ID_OR_PATH`` or ``open_clip:ID``) on a manifest's
    image–report pairs (optionally one domain); returns a summary with the validation figures
    before training (``untrained``) and at the best epoch (``val``)."""
    import torch
    from tqdm.auto import tqdm

    cfg = config or ClipTrainConfig()
    library, _ = parse_dual_spec(model)
    rows = select_rows(manifest, domain, domain_field, text_field, subset)
    train, val = (split_rows(rows, split_field=split_field) if split_field
                  else split_rows(rows, val_fraction=val_fraction, seed=cfg.seed))
    if len(train) < 2 or not val:
        raise UsageError(f"{manifest}: {len(train)} training and {len(val)} validation pairs; "
                         "need at least 2 and 1")
    torch.manual_seed(cfg.seed)
    dual = load_dual_model(model, pretrained=pretrained, device=device)
    opt = torch.optim.AdamW(dual.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad": 0, "history": []}
    if resume and (out / "last.pt").exists():
        try:
            payload = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint reads the same
            raise MmedragError(f"{out / 'last.pt'}: cannot read checkpoint to resume "
                               f"({exc})") from exc
        if payload.get("model_spec") != model:
            raise UsageError(f"{out / 'last.pt'} was trained from {payload.get('model_spec')!r}, "
                             f"not {model!r}; resume with the same --model")
        dual.net.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        state = payload["state"]
        torch.set_rng_state(payload["rng"])
    began = time.perf_counter()
    if not state["history"]:
        untrained = dual_recall(dual, val)
        state["untrained"] = untrained
        state["history"].append({"epoch": 0, **untrained})
    rng = np.random.default_rng(cfg.seed + state["epoch"])
    for epoch in range(state["epoch"], cfg.epochs):
        if state["bad"] >= cfg.patience:
            break
        dual.net.train()
        order = rng.permutation(len(train))
        batches = [[train[i] for i in order[s:s + cfg.batch_size]]
                   for s in range(0, len(order), cfg.batch_size)]
        bar = tqdm(batches, disable=not progress, desc=f"{library} epoch {epoch + 1}",
                   unit="batch")
        losses = [_step(dual, b, opt) for b in bar if len(b) > 1]
        metrics = dual_recall(dual, val)
        state["history"].append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4),
                                 "T": round(1 / float(dual.logit_scale().item()), 4), **metrics})
        state["epoch"] = epoch + 1
        if metrics[cfg.monitor] > state["best"]:
            state.update(best=metrics[cfg.monitor], best_epoch=epoch + 1, bad=0,
                         best_metrics=metrics)
            dual.save(out / MODEL_DIR)
        else:
            state["bad"] += 1
        tmp = out / "last.tmp"
        torch.save({"model": dual.net.state_dict(), "optimizer": opt.state_dict(),
                    "state": state, "model_spec": model, "rng": torch.get_rng_state()}, tmp)
        tmp.replace(out / "last.pt")
    meta = {"format": FORMAT, "library": library, "model": model, "pretrained": pretrained,
            "domain": domain, "domain_field": domain_field, "best_epoch": state["best_epoch"],
            "train": asdict(cfg), "train_pairs": len(train), "val_pairs": len(val),
            "untrained": state.get("untrained", {}), "val": state.get("best_metrics", {}),
            "history": state["history"]}
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    return {"path": str(out), "model": model, "library": library, "domain": domain,
            "train_pairs": len(train), "val_pairs": len(val), "best_epoch": state["best_epoch"],
            "untrained": state.get("untrained", {}), "val": state.get("best_metrics", {}),
            "seconds": round(time.perf_counter() - began, 1), "history": state["history"]}


def finetune_open_clip(manifest: str | Path, out_dir: str | Path, model: str,
                       pretrained: str | None = None, **options: Any) -> dict[str, Any]:
    """:func:`finetune_dual` for an open_clip model id (``hf-hub:...`` or an architecture)."""
    return finetune_dual(manifest, out_dir, f"open_clip:{model}", pretrained=pretrained,
                         **options)
