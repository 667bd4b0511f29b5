"""The ``transformers-peft`` generator: a transformers model with a PEFT (LoRA) adapter on top."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mmedrag.errors import UsageError
from mmedrag.generation.hf_models import resolve_model, select_device
from mmedrag.generation.protocol import GenerationParams
from mmedrag.generation.transformers_local import TransformersGenerator
from mmedrag.records import Generation


class AdapterGenerator(TransformersGenerator):
    """The transformers generator with a PEFT (LoRA) adapter on top: base + adapter for the
    pipeline and the evaluation harness (registered as ``transformers-peft``).

    Decoding, chat templates, images (for VLMs) and yes-probabilities are those of
    :class:`mmedrag.generation.transformers_local.TransformersGenerator`.

    Args:
        model: checkpoint folder, a ``.gguf`` path, or ``smollm2`` (the packaged GGUF).
        gguf_file: GGUF file name inside ``model``.
        adapter: folder of a PEFT adapter saved by ``mmedrag train dpo`` (None: the base model).
        device: auto | cpu | cuda[:N] (see :func:`select_device`; fp32 on CPU).
        max_tokens: cap on new tokens whatever the caller asks (None: no cap).

    Example:
        >>> gen = AdapterGenerator("smollm2", adapter="runs/dpo/adapter")   # doctest: +SKIP
        >>> gen.generate([{"role": "user", "content": "Is it?"}]).text  # doctest: +SKIP
    """

    def __init__(self, model: str = "smollm2", gguf_file: str | None = None,
                 adapter: str | Path | None = None, device: str = "auto",
                 max_tokens: int | None = None, **options: Any) -> None:
        choice = select_device(device)
        folder, gguf_file = resolve_model(model, gguf_file)
        if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
            raise UsageError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
        options.setdefault("dtype", choice.dtype)
        super().__init__(folder, gguf_file=gguf_file, device=choice.device, **options)
        self.adapter = str(adapter) if adapter is not None else None
        self.max_tokens = max_tokens
        if self.adapter:
            self.name = f"{self.name}+{Path(self.adapter).name}"

    def load(self) -> tuple[Any, Any]:
        """(base model with the adapter applied, processor-or-tokenizer), loaded once."""
        if self._loaded is None:
            model, processor = super().load()
            if self.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter).eval()
            tokenizer = self._tokenizer(processor)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = (model, processor)
        return self._loaded

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: GenerationParams | None = None) -> Generation:
        """Generate as the base class does, with ``max_tokens`` capped."""
        params = params or GenerationParams()
        if self.max_tokens and params.max_tokens > self.max_tokens:
            params = dataclasses.replace(params, max_tokens=self.max_tokens)
        return super().generate(messages, images, params)
