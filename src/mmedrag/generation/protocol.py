"""The Generator contract: chat messages (+ images) in, text with token counts and time out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mmedrag.records import Generation


@dataclass
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    logprobs: bool = False
    stop: list[str] | None = None


@runtime_checkable
class Generator(Protocol):
    """``sees_images`` says whether images reach the model (text-only models get evidence)."""

    name: str
    sees_images: bool

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: GenerationParams | None = None) -> Generation: ...
