"""Small TRL helpers for RAG-PT training: a loss recorder and a collator for per-side images.

TRL's vision collator gives the chosen and the rejected completion the same ``images``; MMed-RAG's
cross-modality pairs need the rejected side to see the *replaced* image. The collator below
feeds ``rejected_images`` (when a row has them) to the rejected half of the batch and leaves
everything else to TRL.

Example:
    >>> recorder = LossRecorder()
    >>> recorder.on_log(None, None, None, logs={"loss": 0.69})
    >>> recorder.losses
    [0.69]
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference


class LossRecorder(TrainerCallback):
    """Keeps the training loss of every logging step (``losses``) and the reward margins."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.margins: list[float] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append(round(float(logs["loss"]), 6))
            margin = logs.get("rewards/margins")
            if margin is not None:
                self.margins.append(round(float(margin), 6))


def _pil(images: list[Any]) -> list[Any]:
    from mmedrag.ingest.images import load_image

    return [load_image(image) for image in images]


class _SwapRejectedImages:
    """Processor proxy: the prompt call's second half of images becomes the rejected images."""

    def __init__(self, processor: Any, rejected: list[list[Any]]) -> None:
        self._processor = processor
        self._rejected = rejected

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)

    def __call__(self, *args: Any, images: Any = None, **kwargs: Any) -> Any:
        n = len(self._rejected)
        if images is not None and len(images) == 2 * n:
            images = list(images[:n]) + self._rejected
        return self._processor(*args, images=images, **kwargs)


class PerSideImageCollator(DataCollatorForVisionPreference):
    """TRL's vision preference collator, with ``rejected_images`` for the rejected side.

    Rows without ``rejected_images`` (overall-alignment pairs) behave exactly as in TRL.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rejected = []
        for example in examples:
            example["images"] = _pil(example.get("images") or [])
            side = example.pop("rejected_images", None)
            rejected.append(_pil(side) if side else example["images"])
        if all(r is e["images"] for r, e in zip(rejected, examples, strict=True)):
            return super().torch_call(examples)
        original = self.processor
        self.processor = _SwapRejectedImages(original, rejected)
        try:
            return super().torch_call(examples)
        finally:
            self.processor = original
