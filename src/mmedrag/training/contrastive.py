"""Contrastive training of the image tower against a frozen text encoder's report embeddings.

Symmetric InfoNCE with a learnable temperature over in-batch image–report similarities; repeated
captions are positives of each other (multi-positive), images of the same case are weak positives,
auxiliary heads learn manifest labels (modality, plane, region), and an optional second InfoNCE
aligns images with case-level text (findings, diagnosis). Validation recall drives checkpoint
selection and early stopping; ``last.pt`` holds everything needed to resume.

Example:
    >>> result = train_tower(train_set, val_set, "out", TowerTrainConfig())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmedrag.encoders.tower import ImageTower, _extra, embed_pixels, to_tensor, tower_config
from mmedrag.errors import MmedragError
from mmedrag.ir_metrics import rank_by_similarity, retrieval_metrics
from mmedrag.training.objectives import LogitScale, augment, info_nce


@dataclass
class TowerTrainConfig:
    """Hyper-parameters of tower training (saved with the checkpoint)."""

    size: int = 64
    width: int = 24
    epochs: int = 24
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    patience: int = 8
    seed: int = 0
    augment: float = 1.0
    aux_weight: float = 0.3
    group_weight: float = 0.3
    case_weight: float = 0.5
    monitor: str = "MRR"
    dropout: float = 0.3
    threads: int = 0
    # fixed per-image features beside the pixels, named as every image feature is
    # (mmedrag.encoders.features): "handcrafted-small" (468 statistics), "imagenet" (frozen
    # EfficientNet-Lite0), ... joined with "+"; "" for pixels only
    extra_features: str = "handcrafted-small+imagenet"


@dataclass
class PairSet:
    """Preloaded training data: pixels ``(n, s, s)`` uint8, report vectors, groups, labels."""

    pixels: np.ndarray
    texts: list[str]
    text_vectors: np.ndarray
    groups: list[str]
    labels: dict[str, list[int]] = field(default_factory=dict)
    case_vectors: np.ndarray | None = None
    extra: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TrainResult:
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, Any]]
    path: Path
    seconds: float


def evaluate_recall(model: ImageTower, data: PairSet,
                    ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Image→report recall among the set's reports, one per image (hit: own or identical text)."""
    ids = [str(i) for i in range(len(data))]
    by_text: dict[str, set[str]] = {}
    for i, text in zip(ids, data.texts, strict=True):
        by_text.setdefault(text, set()).add(i)
    queries = embed_pixels(model, data.pixels, extra=data.extra)
    rankings = rank_by_similarity(queries, data.text_vectors, ids, max(ks))
    return retrieval_metrics(rankings, [by_text[t] for t in data.texts], ks)


def warmup_cosine(total: int, warmup: float = 0.05) -> Any:
    """Learning-rate factor: linear warm-up over ``warmup`` of the steps, then cosine to 2 %."""
    ramp = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        progress = min(1.0, (step - ramp) / max(1, total - ramp))
        return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * progress))

    return factor


def _batch_loss(model: ImageTower, scale: LogitScale, data: PairSet, idx: np.ndarray,
                cfg: TowerTrainConfig, gen: torch.Generator) -> torch.Tensor:
    pixels = augment(to_tensor(data.pixels[idx]), gen, cfg.augment)
    emb, aux = model(pixels, _extra(data.extra, idx))
    texts = torch.from_numpy(data.text_vectors[idx])
    groups = [data.groups[i] for i in idx]
    same_text = np.array([[data.texts[i] == data.texts[j] for j in idx] for i in idx], float)
    same_group = np.array([[a == b for b in groups] for a in groups], float)
    positives = torch.from_numpy(np.maximum(same_text, cfg.group_weight * same_group)).float()
    loss = info_nce(emb, texts, scale(), positives)
    if data.case_vectors is not None and cfg.case_weight:
        cases = torch.from_numpy(data.case_vectors[idx])
        same_case = torch.from_numpy(same_group).float()
        loss = loss + cfg.case_weight * info_nce(emb, cases, scale(), same_case)
    for name, head in aux.items():
        target = torch.tensor([data.labels[name][i] for i in idx])
        keep = target >= 0
        if keep.any():
            loss = loss + cfg.aux_weight * F.cross_entropy(head[keep], target[keep])
    return loss


def _save(path: Path, model: ImageTower, scale: LogitScale, opt: Any, sched: Any, epoch: int,
          state: dict[str, Any], cfg: TowerTrainConfig, meta: dict[str, Any]) -> None:
    payload = {"model": model.state_dict(), "scale": scale.state_dict(),
               "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
               "state": state, "config": asdict(cfg), "tower": tower_config(model), "meta": meta,
               "rng": torch.get_rng_state()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _restore(path: Path, model: ImageTower, scale: LogitScale, opt: Any,
             sched: Any) -> tuple[int, dict]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
        raise MmedragError(f"{path}: cannot read checkpoint to resume ({exc})") from exc
    model.load_state_dict(payload["model"])
    scale.load_state_dict(payload["scale"])
    opt.load_state_dict(payload["optimizer"])
    sched.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"])
    return int(payload["epoch"]), payload["state"]


def _epoch(model: ImageTower, scale: LogitScale, data: PairSet, cfg: TowerTrainConfig,
           opt: Any, sched: Any, epoch: int, progress: Any) -> float:
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    order = torch.randperm(len(data), generator=gen).numpy()
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    batches = [b for b in batches if len(b) > 1]
    total = 0.0
    for idx in batches:
        loss = _batch_loss(model, scale, data, idx, cfg, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item()
        if progress is not None:
            progress.update(1)
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}",
                                 T=f"{1 / scale().item():.3f}")
    return total / max(1, len(batches))


def train_tower(train: PairSet, val: PairSet, out_dir: str | Path, cfg: TowerTrainConfig,
                aux_classes: dict[str, int] | None = None, meta: dict[str, Any] | None = None,
                resume: bool = False, progress: bool = True,
                stop_after: int | None = None) -> TrainResult:
    """Train, validating each epoch; keeps ``best.pt`` (by ``cfg.monitor``) and ``last.pt``.

    ``stop_after`` ends this run after that many epochs (the schedule still spans
    ``cfg.epochs``), so a long training can run in slices with ``resume=True``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    extra_dim = 0 if train.extra is None else train.extra.shape[1]
    model = ImageTower(train.text_vectors.shape[1], cfg.width, aux_classes, cfg.dropout,
                       extra_dim=extra_dim)
    scale = LogitScale()
    opt = torch.optim.AdamW([*model.parameters(), *scale.parameters()], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, -(-len(train) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    start, state = 0, {"best": -1.0, "best_epoch": -1, "bad": 0, "history": []}
    if resume and (out / "last.pt").exists():
        start, state = _restore(out / "last.pt", model, scale, opt, sched)
    began = time.perf_counter()
    bar = tqdm(total=(cfg.epochs - start) * -(-len(train) // cfg.batch_size), disable=not progress,
               desc="tower", unit="batch")
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    for epoch in range(start, end):
        if state["bad"] >= cfg.patience:
            break
        loss = _epoch(model, scale, train, cfg, opt, sched, epoch, bar)
        metrics = evaluate_recall(model, val)
        state["history"].append({"epoch": epoch + 1, "loss": round(loss, 4),
                                 **{k: round(v, 4) for k, v in metrics.items()}})
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}",
                        **{k: f"{metrics[k]:.3f}" for k in ("R@1", "R@5", "R@10")})
        if metrics[cfg.monitor] > state["best"]:
            state.update(best=metrics[cfg.monitor], best_epoch=epoch + 1, bad=0,
                         best_metrics=metrics)
            _save(out / "best.pt", model, scale, opt, sched, epoch + 1, state, cfg, meta or {})
        else:
            state["bad"] += 1
        _save(out / "last.pt", model, scale, opt, sched, epoch + 1, state, cfg, meta or {})
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
    bar.close()
    return TrainResult(state["best_epoch"], state.get("best_metrics", {}), state["history"],
                       out / "best.pt", time.perf_counter() - began)
