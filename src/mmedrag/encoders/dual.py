"""CLIP-family dual encoders (an image tower and a text tower in one space), from transformers or
open_clip: the torch-level adapters used to fine-tune them and, at query time, the fine-tuned
model as an Encoder.

A model is named by a spec: ``hf:ID_OR_PATH`` for a transformers dual encoder (``CLIPModel``,
``SiglipModel``, PubMedCLIP, any model with ``get_image_features`` / ``get_text_features`` and a
``logit_scale``), ``open_clip:ID`` for open_clip (``open_clip:hf-hub:microsoft/BiomedCLIP-...``,
``open_clip:ViT-B-32`` with ``pretrained``, or ``open_clip:local-dir:PATH``).

A fine-tuned folder (written by ``mmedrag train retriever --model hf:...|open_clip:...``) holds
``mmedrag.json`` (format, library, source, domain, validation figures) and ``model/`` in the
library's own format, loadable without mmedrag:

- transformers: ``AutoModel.from_pretrained("FOLDER/model")`` (+ its tokenizer and image
  processor in the same folder);
- open_clip: ``open_clip.create_model_and_transforms("local-dir:FOLDER/model")``
  (``open_clip_config.json`` + ``open_clip_model.safetensors``).

Example:
    >>> parse_dual_spec("hf:flaviagiammarino/pubmed-clip-vit-base-patch32")
    ('transformers', 'flaviagiammarino/pubmed-clip-vit-base-patch32')
    >>> parse_dual_spec("open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    ('open_clip', 'hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.protocol import l2_normalise
from mmedrag.errors import MmedragError, UsageError, optional_import
from mmedrag.ingest.images import load_image

FORMAT = "mmedrag-dual/1"
META_FILE = "mmedrag.json"
MODEL_DIR = "model"
LIBRARIES = {"hf": "transformers", "open_clip": "open_clip"}


def parse_dual_spec(spec: str) -> tuple[str, str]:
    """``hf:X`` → ``("transformers", X)``; ``open_clip:X`` → ``("open_clip", X)``; else a
    one-line error naming the accepted forms."""
    kind, _, target = spec.partition(":")
    if kind not in LIBRARIES or not target:
        raise UsageError(f"model {spec!r}: expected tower, hf:ID_OR_PATH (a transformers dual "
                         "encoder such as CLIP or SigLIP) or open_clip:ID (an open_clip model)")
    return LIBRARIES[kind], target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class HFDualModel:
    """A transformers dual encoder (CLIP, SigLIP, PubMedCLIP, ...) with its tokenizer and image
    processor, loaded from a hub id or a folder (``save`` writes the same layout)."""

    library = "transformers"

    def __init__(self, source: str, device: str = "cpu", max_length: int | None = None) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self._torch = torch
        if source.startswith((".", "/", "~")) and not Path(source).expanduser().exists():
            raise UsageError(f"{source}: no such model folder (give a local folder or a hub id)")
        try:
            self.net = AutoModel.from_pretrained(source).to(device)
        except Exception as exc:  # noqa: BLE001 - one line naming the model, not a traceback
            raise MmedragError(f"cannot load transformers model {source!r}: "
                               f"{_first_line(exc)}") from exc
        missing = [name for name in ("get_image_features", "get_text_features", "logit_scale")
                   if not hasattr(self.net, name)]
        if missing:
            raise MmedragError(f"{source!r} ({type(self.net).__name__}) is not a dual encoder: "
                               f"it has no {', '.join(missing)}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.image_processor = AutoImageProcessor.from_pretrained(source)
        except Exception as exc:  # noqa: BLE001
            raise MmedragError(f"{source!r}: cannot load its tokenizer and image processor: "
                               f"{_first_line(exc)}") from exc
        self.source = source
        self.device = device
        positions = getattr(getattr(self.net.config, "text_config", None),
                            "max_position_embeddings", None)
        self.max_length = max_length or int(positions or 77)

    @staticmethod
    def _pooled(out: Any) -> Any:
        # transformers 5 returns a model output whose pooler_output is the projected embedding
        return out if hasattr(out, "dim") else out.pooler_output

    def image_features(self, images: list[Any]) -> Any:
        """L2-normalised image embeddings (a torch tensor, with grad when training)."""
        pixels = self.image_processor(images=[load_image(i) for i in images],
                                      return_tensors="pt")["pixel_values"].to(self.device)
        feats = self._pooled(self.net.get_image_features(pixel_values=pixels))
        return self._torch.nn.functional.normalize(feats, dim=-1)

    def text_features(self, texts: list[str]) -> Any:
        tokens = self.tokenizer(list(texts), padding="max_length"
                                if "siglip" in type(self.net).__name__.lower() else True,
                                truncation=True, max_length=self.max_length, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in tokens.items()
                  if k in ("input_ids", "attention_mask")}
        feats = self._pooled(self.net.get_text_features(**inputs))
        return self._torch.nn.functional.normalize(feats, dim=-1)

    def logit_scale(self) -> Any:
        """The model's own learnable inverse temperature, ``exp(logit_scale)`` capped at 100."""
        return self.net.logit_scale.exp().clamp(max=100).reshape(())

    def save(self, folder: str | Path) -> None:
        """``save_pretrained`` of model, tokenizer and image processor (loadable without
        mmedrag: ``AutoModel.from_pretrained(folder)``)."""
        self.net.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)


class OpenClipDualModel:
    """An open_clip model from a hub id (``hf-hub:...``), a folder (``local-dir:PATH`` or a
    path), or an architecture name with a ``pretrained`` tag or checkpoint file."""

    library = "open_clip"

    def __init__(self, source: str, pretrained: str | None = None, device: str = "cpu") -> None:
        import torch

        open_clip = optional_import("open_clip", extra="clip", package="open-clip-torch")
        self._torch = torch
        self._open_clip = open_clip
        if Path(source).is_dir():
            source = f"local-dir:{source}"
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                source, pretrained=pretrained, device=device)
            self.tokenizer = open_clip.get_tokenizer(source)
        except Exception as exc:  # noqa: BLE001 - re-raised with the model named
            raise MmedragError(f"cannot load open_clip model {source!r}: "
                               f"{_first_line(exc)}") from exc
        self.net = net
        self.preprocess = preprocess
        self.source = source
        self.pretrained = pretrained
        self.device = device
        self.model_cfg = self._model_config(source)

    def _model_config(self, source: str) -> dict[str, Any]:
        """The architecture config open_clip built the model from (saved beside the weights)."""
        if source.startswith("local-dir:"):
            path = Path(source[len("local-dir:"):]) / "open_clip_config.json"
            return dict(json.loads(path.read_text())["model_cfg"])
        if source.startswith("hf-hub:"):
            from open_clip.factory import _get_hf_config

            return dict(_get_hf_config(source[len("hf-hub:"):])["model_cfg"])
        found = self._open_clip.get_model_config(source.replace("/", "-"))
        if found is None:
            raise MmedragError(f"open_clip model {source!r}: no architecture config to save")
        return dict(found)

    def image_features(self, images: list[Any]) -> Any:
        pixels = self._torch.stack([self.preprocess(load_image(i)) for i in images])
        feats = self.net.encode_image(pixels.to(self.device))
        return self._torch.nn.functional.normalize(feats, dim=-1)

    def text_features(self, texts: list[str]) -> Any:
        feats = self.net.encode_text(self.tokenizer(list(texts)).to(self.device))
        return self._torch.nn.functional.normalize(feats, dim=-1)

    def logit_scale(self) -> Any:
        return self.net.logit_scale.exp().clamp(max=100).reshape(())

    def save(self, folder: str | Path) -> None:
        """``open_clip_config.json`` + ``open_clip_model.safetensors`` (+ an HF tokenizer when
        the model has one): ``create_model_and_transforms("local-dir:FOLDER")`` loads it."""
        import safetensors.torch
        from open_clip.push_to_hf_hub import save_config_for_hf

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        safetensors.torch.save_file(state, str(out / "open_clip_model.safetensors"))
        save_config_for_hf(self.net, out / "open_clip_config.json", model_config=self.model_cfg)
        if hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(out)


def load_dual_model(spec: str, pretrained: str | None = None, device: str = "cpu") -> Any:
    """The adapter a spec names (``hf:...`` or ``open_clip:...``); ``pretrained`` applies to
    open_clip architecture names only and is refused otherwise."""
    library, target = parse_dual_spec(spec)
    if library == "transformers":
        if pretrained is not None:
            raise UsageError("--pretrained applies to open_clip architecture names only; "
                             "an hf: model carries its weights")
        return HFDualModel(target, device=device)
    return OpenClipDualModel(target, pretrained=pretrained, device=device)


def is_dual_folder(path: str | Path) -> bool:
    """Whether ``path`` is a fine-tuned dual encoder folder (``mmedrag.json`` + ``model/``)."""
    return (Path(path) / META_FILE).exists()


def read_dual_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    if not meta_path.exists() or not (Path(path) / MODEL_DIR).is_dir():
        raise UsageError(f"{path}: not a fine-tuned dual encoder ({META_FILE} + {MODEL_DIR}/ "
                         "missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise MmedragError(f"{meta_path}: unknown dual-encoder format {meta.get('format')!r}")
    if meta.get("library") not in ("transformers", "open_clip"):
        raise MmedragError(f"{meta_path}: field 'library' must be transformers or open_clip, "
                           f"got {meta.get('library')!r}")
    return dict(meta)


class DualEncoder:
    """A fine-tuned dual encoder folder as an Encoder: images through its image tower, texts
    through its own text tower (one shared space).

    Example:
        >>> enc = DualEncoder("models/ct-clip")                             # doctest: +SKIP
        >>> enc.encode_images(["scan.png"]) @ enc.encode_texts(["axial CT"]).T  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 32) -> None:
        self.path = Path(path)
        self.meta = read_dual_meta(self.path)
        model_dir = str(self.path / MODEL_DIR)
        self.model = (HFDualModel(model_dir, device=device)
                      if self.meta["library"] == "transformers"
                      else OpenClipDualModel(model_dir, device=device))
        self.model.net.eval()
        self.batch_size = batch_size
        self.domain = self.meta.get("domain")
        self.name = f"dual:{self.path.name}"
        self.version = f"{FORMAT}-{self.meta['library']}-e{self.meta.get('best_epoch')}"
        self.dim = int(self.encode_texts(["x"]).shape[1])

    def _run(self, items: list[Any], fn: Any) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                out.append(fn(items[start:start + self.batch_size]).float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        return self._run(list(images), self.model.image_features)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self._run(list(texts), self.model.text_features)

    def save(self, directory: str | Path) -> None:
        self.model.save(Path(directory) / MODEL_DIR)
        (Path(directory) / META_FILE).write_text(json.dumps(self.meta, indent=1))

    def config(self) -> dict[str, Any]:
        return {"name": "dual", "path": str(self.path), "dim": self.dim, "version": self.version}


__all__ = ["DualEncoder", "HFDualModel", "OpenClipDualModel", "is_dual_folder",
           "load_dual_model", "parse_dual_spec", "read_dual_meta"]
