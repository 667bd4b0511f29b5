"""Any OpenAI-compatible chat-completions endpoint: vLLM, Ollama, SGLang, llama.cpp server,
LM Studio, hosted APIs.

Images go as data-URL ``image_url`` parts when the endpoint serves a vision model
(``vision: true``). Transient failures (HTTP 429 and 5xx, connection errors, timeouts) are
retried with exponential backoff; other 4xx answers fail at once with the server's message.
The API key is read from the environment variable named by ``api_key_env`` — never from the
config itself.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx

from mmedrag.config import resolve_secret
from mmedrag.errors import MmedragError, UsageError
from mmedrag.generation.protocol import GenerationParams
from mmedrag.records import Generation

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_YES = {"yes", "true"}
_NO = {"no", "false"}


class GenerationError(MmedragError):
    """The endpoint refused or failed the request (message from the server when it sent one)."""


def image_data_url(image: Any) -> str:
    """A PNG data URL for a PIL image, a path or raw bytes."""
    from mmedrag.ingest.images import load_image

    buffer = io.BytesIO()
    load_image(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def with_images(messages: list[dict[str, Any]], images: list[Any] | None) -> list[dict[str, Any]]:
    """Messages with ``images`` attached as image parts to the last user message."""
    if not images:
        return messages
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message.get("role") == "user":
            content = message.get("content", "")
            parts = (list(content) if isinstance(content, list)
                     else [{"type": "text", "text": content}])
            parts[:0] = [{"type": "image_url", "image_url": {"url": image_data_url(i)}}
                         for i in images]
            message["content"] = parts
            return out
    raise UsageError("images need a user message to attach to")


def _server_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:300]
    return str(error)[:300]


class OpenAICompatGenerator:
    """Chat completions over HTTP (``POST {base_url}/chat/completions``).

    Args:
        model: the model name the server expects.
        base_url: e.g. ``http://localhost:8000/v1`` (vLLM) or ``http://localhost:11434/v1``.
        api_key_env: environment variable holding the API key (optional for local servers).
        vision: True when the served model takes images (sent as data URLs).
        timeout: seconds per request; max_retries: retries on transient failures;
        backoff: first retry delay in seconds (doubles each time).

    Example:
        >>> gen = OpenAICompatGenerator(model="qwen2.5-vl", base_url="http://localhost:8000/v1",
        ...                             vision=True)                     # doctest: +SKIP
        >>> msgs = [{"role": "user", "content": "Is this a CT?"}]
        >>> gen.generate(msgs, images=["ct.png"]).text                   # doctest: +SKIP
        'Yes.'
    """

    def __init__(self, model: str = "default", base_url: str = "http://localhost:8000/v1",
                 api_key_env: str | None = None, vision: bool = False, timeout: float = 120.0,
                 max_retries: int = 4, backoff: float = 0.5, headers: dict[str, str] | None = None,
                 ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError("generator option base_url must start with http:// or https://, "
                             f"got {base_url!r}")
        if max_retries < 0 or backoff < 0:
            raise UsageError("max_retries and backoff must be >= 0")
        self.model = model
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.sees_images = vision
        self.max_retries = max_retries
        self.backoff = backoff
        key = resolve_secret({"api_key_env": api_key_env}, "api_key") if api_key_env else None
        self._headers = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
        self._client = httpx.Client(timeout=timeout, headers=self._headers)

    def _payload(self, messages: list[dict[str, Any]], images: list[Any] | None,
                 params: GenerationParams, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": with_images(messages, images if self.sees_images else None),
            "max_tokens": params.max_tokens, "temperature": params.temperature,
            "top_p": params.top_p, "seed": params.seed, "stream": stream}
        if params.stop:
            payload["stop"] = params.stop
        if params.logprobs and not stream:
            payload["logprobs"] = True
            payload["top_logprobs"] = 10
        return payload

    def _post(self, payload: dict[str, Any], stream: bool = False) -> httpx.Response:
        """POST with retries on transient failures; returns an open response when streaming."""
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                request = self._client.build_request("POST", url, json=payload)
                response = self._client.send(request, stream=stream)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if last:
                    raise GenerationError(f"{url}: {exc.__class__.__name__}: {exc} "
                                          f"(after {attempt + 1} attempts)") from None
            else:
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                    response.close()
                if response.status_code not in _RETRY_STATUS or last:
                    raise GenerationError(f"{url}: HTTP {response.status_code}: "
                                          f"{_server_message(response)}")
            time.sleep(self.backoff * (2 ** attempt))
        raise AssertionError("unreachable")

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: GenerationParams | None = None) -> Generation:
        """One completion; token counts from the server's ``usage``."""
        params = params or GenerationParams()
        start = time.perf_counter()
        response = self._post(self._payload(messages, images, params, stream=False))
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise GenerationError(f"{self.base_url}: response is not a chat completion: "
                                  f"{response.text[:200]}") from None
        usage = data.get("usage") or {}
        logprobs, yes_probability = _logprobs(choice.get("logprobs"))
        return Generation(text=text.strip(), tokens_in=int(usage.get("prompt_tokens") or 0),
                          tokens_out=int(usage.get("completion_tokens") or 0),
                          seconds=time.perf_counter() - start,
                          logprobs=logprobs if params.logprobs else None,
                          yes_probability=yes_probability if params.logprobs else None,
                          model=str(data.get("model") or self.model))

    def stream(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
               params: GenerationParams | None = None) -> Iterator[str]:
        """Yield text deltas from the server-sent-events stream."""
        params = params or GenerationParams()
        response = self._post(self._payload(messages, images, params, stream=True), stream=True)
        try:
            for data in iter_sse(response.iter_lines()):
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    raise GenerationError(f"{self.base_url}: bad stream event: "
                                          f"{data[:200]}") from None
                if "error" in event:
                    raise GenerationError(f"{self.base_url}: {_server_message_from(event)}")
                for choice in event.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        yield delta
        finally:
            response.close()

    def close(self) -> None:
        self._client.close()


def iter_sse(lines: Iterator[str]) -> Iterator[str]:
    """The ``data`` payloads of a server-sent-events stream (multi-line data joined by newlines).

    Example:
        >>> list(iter_sse(iter(["data: a", "", ": comment", "data: b", "data: c", ""])))
        ['a', 'b\\nc']
    """
    buffer: list[str] = []
    for line in lines:
        if not line.strip():
            if buffer:
                yield "\n".join(buffer)
                buffer = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            buffer.append(value[1:] if value.startswith(" ") else value)
    if buffer:
        yield "\n".join(buffer)


def _server_message_from(event: dict[str, Any]) -> str:
    error = event.get("error")
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def _logprobs(block: Any) -> tuple[list[float] | None, float | None]:
    """Per-token log-probs and P(yes)/(P(yes)+P(no)) at the first token, when sent."""
    if not isinstance(block, dict) or not block.get("content"):
        return None, None
    content = block["content"]
    values = [float(t["logprob"]) for t in content if t.get("logprob") is not None]
    first = content[0].get("top_logprobs") or [{"token": content[0].get("token", ""),
                                                 "logprob": content[0].get("logprob", -math.inf)}]
    p_yes = sum(math.exp(t["logprob"]) for t in first if t["token"].strip().lower() in _YES)
    p_no = sum(math.exp(t["logprob"]) for t in first if t["token"].strip().lower() in _NO)
    yes_probability = p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None
    return values or None, yes_probability
