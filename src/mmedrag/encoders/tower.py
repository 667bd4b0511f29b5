"""The project's image tower at query time: the network, its trained weights as an Encoder, and
the fixed per-image features it takes in beside its pixels.

The tower is a small CNN over letterboxed grey images plus a fixed intensity-histogram branch; a
projection maps it into a frozen text encoder's space (384-d for all-MiniLM-L6-v2), so an image
query searches the index's text store. Training lives in ``mmedrag.training.retriever``; it
writes ``tower.pt`` + ``config.json`` (+ ``memory.npz``), which :class:`TrainedTowerEncoder`
loads.

Example:
    >>> import torch
    >>> tower = ImageTower(out_dim=384, aux_classes={"modality": 2})
    >>> emb, aux = tower(torch.rand(4, 1, 96, 96))
    >>> emb.shape, aux["modality"].shape
    (torch.Size([4, 384]), torch.Size([4, 2]))
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmedrag.encoders.features import image_features
from mmedrag.encoders.pixels import preload_images
from mmedrag.encoders.protocol import l2_normalise
from mmedrag.errors import MmedragError, UsageError

FORMAT = "mmedrag-tower/1"
MEMORY_K = 10  # neighbours and blend of the report prior, chosen on a split inside MedPix train
MEMORY_MIX = 0.5
MEMORY_TEMPERATURE = 0.05
# Towers saved before the feature names were unified called the 468-value statistics
# "handcrafted"; the image-encoder registry names them "handcrafted-small".
_LEGACY_PARTS = {"handcrafted": "handcrafted-small"}


HIST_BINS = 32


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True))


def intensity_histogram(pixels: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """Per-image grey-level histogram of the non-black pixels (fractions), ``(n, bins)``."""
    flat = pixels.flatten(1).clamp(0, 1)
    index = (flat * (bins - 1)).round().long()
    hist = torch.zeros(flat.shape[0], bins, device=flat.device)
    hist.scatter_add_(1, index, torch.ones_like(flat))
    return torch.sqrt(hist / flat.shape[1])


class ImageTower(nn.Module):
    """Small CNN + histogram branch → L2-normalised embedding (+ auxiliary label logits).

    Args:
        out_dim: embedding width (the frozen text encoder's dimension).
        width: channels of the first stage (doubles twice; 32 → ≈1.2 M parameters).
        aux_classes: label field → number of classes, for auxiliary classification heads.
    """

    def __init__(self, out_dim: int = 384, width: int = 32,
                 aux_classes: dict[str, int] | None = None, dropout: float = 0.2,
                 extra_dim: int = 0) -> None:
        super().__init__()
        w = width
        self.extra_dim = extra_dim
        self.extra_norm = nn.LayerNorm(extra_dim) if extra_dim else None
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            _block(w, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 6 * w, 2))
        feat = 6 * w * 2 + HIST_BINS + extra_dim
        self.trunk = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat, 512), nn.ReLU(inplace=True))
        self.project = nn.Linear(512, out_dim)
        heads = {name: nn.Linear(512, n) for name, n in (aux_classes or {}).items()}
        self.aux = nn.ModuleDict(heads)

    def embed(self, pixels: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The 512-d trunk features (before projection); ``extra``: fixed per-image features."""
        maps = self.features(pixels * 2 - 1)
        parts = [maps.mean((2, 3)), maps.amax((2, 3)), intensity_histogram(pixels)]
        if self.extra_norm is not None:
            if extra is None:
                raise ValueError(f"this tower needs {self.extra_dim} extra features per image")
            parts.append(self.extra_norm(extra))
        return self.trunk(torch.cat(parts, dim=1))

    def forward(self, pixels: torch.Tensor, extra: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = self.embed(pixels, extra)
        emb = F.normalize(self.project(hidden), dim=-1)
        return emb, {name: head(hidden) for name, head in self.aux.items()}


def tower_config(model: ImageTower) -> dict[str, Any]:
    """Constructor arguments that rebuild ``model`` (saved beside its weights)."""
    return {"out_dim": model.project.out_features,
            "width": model.features[0].out_channels,
            "aux_classes": {k: v.out_features for k, v in model.aux.items()},
            "extra_dim": model.extra_dim}


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255).unsqueeze(1)


def _extra(extra: np.ndarray | None, idx: Any) -> torch.Tensor | None:
    return None if extra is None else torch.from_numpy(extra[idx])


def embed_pixels(model: ImageTower, pixels: np.ndarray, batch: int = 128,
                 extra: np.ndarray | None = None) -> np.ndarray:
    """Eval-mode tower embeddings of preloaded pixels (and fixed features when it uses them)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch):
            part = slice(start, start + batch)
            out.append(model(to_tensor(pixels[part]), _extra(extra, part))[0].numpy())
    return np.concatenate(out) if out else np.zeros((0, model.project.out_features), np.float32)


@functools.lru_cache(maxsize=8)
def _extractor(spec: str) -> Any:
    """One extractor per spec per process (the ImageNet network loads once, not per query)."""
    return image_features(spec)


def extra_features(images: list[Any], spec: str) -> np.ndarray:
    """Fixed per-image features the tower takes in beside its pixels, named like every other image
    feature (``mmedrag.encoders.features``): e.g. ``handcrafted-small+imagenet``."""
    return _extractor(spec).encode_images(list(images))


def saved_extra_spec(meta: dict[str, Any]) -> str:
    """The image-feature spec a saved tower was trained with, in today's names (older towers
    said ``handcrafted`` for the 468 hand-crafted values, now ``handcrafted-small``)."""
    if not int(meta["tower"].get("extra_dim", 0)):
        return ""
    spec = str(meta.get("train", {}).get("extra_features", "handcrafted"))
    if int(meta.get("feature_names", 1)) >= 2:
        return spec
    return "+".join(_LEGACY_PARTS.get(part, part) for part in spec.split("+"))


class TrainedTowerEncoder:
    """The trained image tower as an Encoder; its text side is the frozen text encoder.

    Example:
        >>> enc = TrainedTowerEncoder("models/medpix-tower")            # doctest: +SKIP
        >>> enc.encode_images(["scan.png"]) @ enc.encode_texts(["axial CT"]).T  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        import torch

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


class TowerTrunkFeatures:
    """A trained tower's 512-d trunk features (its auxiliary heads learnt modality, plane,
    region): image features for linear probes such as the domain router (``tower-trunk:PATH``)."""

    def __init__(self, path: str | Path) -> None:
        self.tower = TrainedTowerEncoder(path)
        self.name = f"tower-trunk:{path}"
        self.version = self.tower.version
        self.dim = 512

    def encode_images(self, images: list[Any]) -> np.ndarray:
        return self.tower.encode_features(images)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise UsageError("tower trunk features have no text side")

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
