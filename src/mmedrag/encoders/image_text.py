"""Image encoders: a weight-free thumbnail encoder, open_clip models, and the project's own tower.

- ``ThumbnailImageEncoder``: grey 32×32 thumbnail, centred and normalised. No weights; finds the
  same or near-identical images (exactness checks, de-duplication, image→image search).
- ``OpenClipEncoder``: any open_clip model from a hub id (``hf-hub:microsoft/BiomedCLIP-...``) or a
  local checkpoint; image and text towers in one space (image→report retrieval).
- ``TransformersImageEncoder``: any transformers vision backbone (ViT, DINOv2, RAD-DINO, Swin,
  ConvNeXt, ...) from a hub id or a local folder; image side only (pooled features for the domain
  router's linear probe, image→image search).
- ``TrainedTowerEncoder`` (in ``mmedrag.encoders.tower``): the project's own image tower,
  trained to map images into a frozen text encoder's space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.protocol import l2_normalise
from mmedrag.errors import MmedragError, optional_import
from mmedrag.ingest.images import load_image


class ThumbnailImageEncoder:
    """Deterministic pixel embedding: grey thumbnail, zero mean, unit norm.

    Example:
        >>> from PIL import Image
        >>> ThumbnailImageEncoder().encode_images([Image.new("RGB", (64, 64))]).shape
        (1, 1024)
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.name = f"thumbnail-{size}"
        self.version = "1"
        self.dim = size * size

    def encode_images(self, images: list[Any]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = []
        for image in images:
            grey = load_image(image).convert("L").resize((self.size, self.size))
            arr = np.asarray(grey, dtype=np.float32).ravel()
            rows.append(arr - arr.mean())
        return l2_normalise(np.stack(rows))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise MmedragError("the thumbnail encoder has no text tower")

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)

    def config(self) -> dict[str, Any]:
        return {"name": "thumbnail", "size": self.size, "version": self.version, "dim": self.dim}


class OpenClipEncoder:
    """open_clip image–text model from a hub id or a local checkpoint (BiomedCLIP, UniMed-CLIP).

    Example (needs the weights locally or network access):
        >>> enc = OpenClipEncoder("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    """

    def __init__(self, model: str, pretrained: str | None = None, device: str = "cpu",
                 batch_size: int = 32) -> None:
        open_clip = optional_import("open_clip", extra="clip", package="open-clip-torch")
        import torch

        self._torch = torch
        try:
            if model.startswith("hf-hub:") or pretrained is None and not Path(model).exists():
                net, preprocess = open_clip.create_model_from_pretrained(model, device=device)
                tokenizer = open_clip.get_tokenizer(model)
            else:
                net, _, preprocess = open_clip.create_model_and_transforms(
                    model, pretrained=pretrained, device=device)
                tokenizer = open_clip.get_tokenizer(model)
        except Exception as exc:  # noqa: BLE001
            raise MmedragError(f"cannot load open_clip model {model!r}: {exc}") from exc
        self._net = net.eval()
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._device = device
        self.batch_size = batch_size
        self.name = model if pretrained is None else f"{model}:{pretrained}"
        self.version = "open_clip"
        with torch.no_grad():
            self.dim = int(self._net.encode_text(self._tokenizer(["x"]).to(device)).shape[-1])

    def encode_images(self, images: list[Any]) -> np.ndarray:
        out = []
        with self._torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = [self._preprocess(load_image(i))
                         for i in images[start:start + self.batch_size]]
                feats = self._net.encode_image(self._torch.stack(batch).to(self._device))
                out.append(feats.float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        with self._torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(texts[start:start + self.batch_size]).to(self._device)
                out.append(self._net.encode_text(tokens).float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._torch.save(self._net.state_dict(), Path(directory) / "open_clip.pt")

    def config(self) -> dict[str, Any]:
        return {"name": "open_clip", "model": self.name, "dim": self.dim, "version": self.version}


class TransformersImageEncoder:
    """Frozen transformers vision model (hub id or local folder): [CLS]/pooled output joined with
    the mean of the last hidden states, L2-normalised per half (``2 * hidden_size`` values).

    Example (needs the weights locally or network access):
        >>> enc = TransformersImageEncoder("microsoft/rad-dino")          # doctest: +SKIP
        >>> enc.encode_images(["scan.png"]).shape                          # doctest: +SKIP
        (1, 1536)
    """

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self._torch = torch
        if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
            raise MmedragError(f"{model}: no such model folder (give a local folder or a hub id)")
        try:
            self._processor = AutoImageProcessor.from_pretrained(model, use_fast=False)
            self._net = AutoModel.from_pretrained(model).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - one line naming the model, not a traceback
            raise MmedragError(f"cannot load image model {model!r}: {str(exc).splitlines()[0]}"
                               ) from exc
        config = self._net.config
        hidden = getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None)
                                                          or [None])[-1]
        if hidden is None:
            raise MmedragError(f"{model!r}: no hidden_size in its config; not a vision backbone")
        self._device = device
        self.batch_size = batch_size
        self.name = f"hf:{model}"
        self.version = "transformers"
        self.dim = 2 * int(hidden)

    def _pool(self, out: Any) -> Any:
        hidden = out.last_hidden_state
        if hidden.dim() == 4:                              # convolutional: (n, c, h, w)
            mean = hidden.mean((2, 3))
            first = out.pooler_output.flatten(1) if getattr(out, "pooler_output", None) \
                is not None else hidden.amax((2, 3))
        else:                                              # transformer: (n, tokens, c)
            mean = hidden[:, 1:].mean(1) if hidden.shape[1] > 1 else hidden[:, 0]
            pooled = getattr(out, "pooler_output", None)
            first = pooled if pooled is not None and pooled.dim() == 2 else hidden[:, 0]
        return first, mean

    def encode_images(self, images: list[Any]) -> np.ndarray:
        out = []
        with self._torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = [load_image(i) for i in images[start:start + self.batch_size]]
                inputs = self._processor(images=batch, return_tensors="pt").to(self._device)
                first, mean = self._pool(self._net(**inputs))
                out.append(np.concatenate([l2_normalise(first.float().cpu().numpy()),
                                           l2_normalise(mean.float().cpu().numpy())], axis=1))
        return np.concatenate(out).astype(np.float32) if out else \
            np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise MmedragError(f"{self.name} is an image-only model; it has no text side")

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)

    def config(self) -> dict[str, Any]:
        return {"name": "transformers_image", "model": self.name, "dim": self.dim,
                "version": self.version}
