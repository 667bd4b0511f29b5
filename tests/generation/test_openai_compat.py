"""The OpenAI-compatible backend against a REAL local server (llama-cpp-python's, serving the
shipped SmolLM2 GGUF) plus a tiny local HTTP server that fails before it succeeds."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from generation.llama_server import free_port as _free_port
from generation.llama_server import llama_server as start_llama_server
from mmedrag.generation.openai_compat import GenerationError, OpenAICompatGenerator, with_images
from mmedrag.generation.protocol import GenerationParams

pytest.importorskip("llama_cpp")
pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server]")

QUESTION = [{"role": "user", "content": "Say the word hello."}]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):  # noqa: ANN001, ANN201
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with start_llama_server(log_path, "--n_ctx", "1024") as base:
        yield base


def test_chat_completion_with_usage_and_logprobs(llama_server) -> None:
    gen = OpenAICompatGenerator(model="smollm2", base_url=llama_server)
    out = gen.generate(QUESTION, params=GenerationParams(max_tokens=12, logprobs=True))
    assert out.text
    assert out.tokens_in > 5 and 0 < out.tokens_out <= 12
    assert out.logprobs and len(out.logprobs) == out.tokens_out
    assert all(lp <= 0 for lp in out.logprobs)
    assert out.seconds > 0


@pytest.mark.slow
def test_yes_probability_from_top_logprobs(llama_server) -> None:
    gen = OpenAICompatGenerator(model="smollm2", base_url=llama_server)
    msgs = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    out = gen.generate(msgs, params=GenerationParams(max_tokens=3, logprobs=True))
    assert out.yes_probability is not None and 0.0 < out.yes_probability < 1.0


@pytest.mark.slow
def test_streaming_yields_the_same_text(llama_server) -> None:
    gen = OpenAICompatGenerator(model="smollm2", base_url=llama_server)
    params = GenerationParams(max_tokens=12, temperature=0.0)
    pieces = list(gen.stream(QUESTION, params=params))
    assert len(pieces) >= 2
    assert "".join(pieces).strip() == gen.generate(QUESTION, params=params).text


def test_client_error_is_reported_at_once(llama_server) -> None:
    gen = OpenAICompatGenerator(model="smollm2", base_url=llama_server, max_retries=3,
                                backoff=5.0)
    too_long = [{"role": "user", "content": "word " * 2000}]
    start = time.monotonic()
    with pytest.raises(GenerationError, match=r"HTTP 400: .*maximum context length"):
        gen.generate(too_long, params=GenerationParams(max_tokens=4))
    assert time.monotonic() - start < 5.0          # no retries on a 4xx


class _FlakyHandler(BaseHTTPRequestHandler):
    calls: list[int] = []

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        json.loads(self.rfile.read(length))
        self.calls.append(1)
        if len(self.calls) <= 2:
            body, status = b'{"error": {"message": "overloaded"}}', 503
        else:
            body, status = json.dumps({"model": "flaky", "choices": [{"message": {
                "content": "ok"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
            ).encode(), 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_retries_on_503_then_succeeds() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        gen = OpenAICompatGenerator(model="m", base_url=base, max_retries=3, backoff=0.01)
        out = gen.generate(QUESTION)
        assert out.text == "ok" and out.tokens_in == 3 and out.model == "flaky"
        assert len(_FlakyHandler.calls) == 3
        _FlakyHandler.calls.clear()
        gen = OpenAICompatGenerator(model="m", base_url=base, max_retries=1, backoff=0.01)
        with pytest.raises(GenerationError, match="HTTP 503: overloaded"):
            gen.generate(QUESTION)
        assert len(_FlakyHandler.calls) == 2
    finally:
        server.shutdown()


def test_connection_errors_are_retried_then_reported() -> None:
    gen = OpenAICompatGenerator(model="m", base_url=f"http://127.0.0.1:{_free_port()}/v1",
                                max_retries=2, backoff=0.01)
    with pytest.raises(GenerationError, match="after 3 attempts"):
        gen.generate(QUESTION)


def test_images_become_data_url_parts() -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "Is this a CT?"}]
    out = with_images(msgs, [Image.new("RGB", (8, 8))])
    parts = out[-1]["content"]
    assert parts[0]["type"] == "image_url"
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "Is this a CT?"}
    assert msgs[-1]["content"] == "Is this a CT?"       # the caller's messages are untouched


def test_api_key_comes_from_the_environment(monkeypatch) -> None:
    from mmedrag.errors import UsageError

    with pytest.raises(UsageError, match="MMEDRAG_TEST_KEY"):
        OpenAICompatGenerator(api_key_env="MMEDRAG_TEST_KEY")
    monkeypatch.setenv("MMEDRAG_TEST_KEY", "sk-test")
    gen = OpenAICompatGenerator(api_key_env="MMEDRAG_TEST_KEY")
    assert gen._headers["Authorization"] == "Bearer sk-test"
