"""The OpenAI-compatible backend sends images as base64 data-URL content parts that a REAL
OpenAI-compatible server accepts and feeds to its vision encoder: llama-cpp-python's server
(``llama_cpp.server``) with the shipped SmolLM2 GGUF and a tiny random LLaVA-1.5 projector
(``mmproj`` GGUF built in the test; no weights are downloaded). The projector is random, so the
text is not meaningful: what is checked is that the image crosses the API, is decoded and
encoded by llama.cpp's multimodal library, and changes what the model computes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tinymodels import tiny_mmproj

from generation.llama_server import llama_server
from mmedrag.config import Component, Config
from mmedrag.generation.openai_compat import OpenAICompatGenerator
from mmedrag.generation.protocol import GenerationParams
from mmedrag.pipeline import Pipeline

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server]")

QUESTION = [{"role": "user", "content": "What colour is this image?"}]
RED = Image.new("RGB", (64, 64), (220, 30, 30))
BLACK = Image.new("RGB", (64, 64), (0, 0, 0))


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("vision-server")
    mmproj = tiny_mmproj(folder / "mmproj.gguf")
    log_path = folder / "server.log"
    with llama_server(log_path, "--clip_model_path", str(mmproj), "--chat_format", "llava-1-5",
                      "--n_ctx", "2048") as base:
        yield base, log_path


def _encoded_images(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("clip_encode: copying image 1/1")


@pytest.mark.slow  # ~20 s: a llama.cpp server with a vision projector on one thread
def test_image_parts_reach_the_servers_vision_encoder(vision_server) -> None:  # noqa: ANN001
    base, log_path = vision_server
    gen = OpenAICompatGenerator(model="smollm2", base_url=base, vision=True)
    params = GenerationParams(max_tokens=4, logprobs=True)
    before = _encoded_images(log_path)
    red = gen.generate(QUESTION, images=[RED], params=params)
    black = gen.generate(QUESTION, images=[BLACK], params=params)
    # llama.cpp decoded each data URL, resized it to the projector's 28 px and encoded it
    assert _encoded_images(log_path) - before == 2
    assert "nx=28, ny=28" in log_path.read_text(errors="replace")
    # both prompts hold the same 4 image embeddings' worth of positions ...
    assert red.tokens_in == black.tokens_in
    # ... whose values came from the pixels: the model's first-token scores differ
    assert red.logprobs and black.logprobs
    assert red.logprobs[0] != pytest.approx(black.logprobs[0], abs=1e-6)
    # a text-only backend (vision off) sends no image, and the server encodes none
    blind = OpenAICompatGenerator(model="smollm2", base_url=base)
    blind.generate(QUESTION, images=[RED], params=params)
    assert _encoded_images(log_path) - before == 2


@pytest.mark.slow
def test_pipeline_answers_through_the_server_with_the_image(vision_server, hashing_index,  # noqa: ANN001
                                                            sample_dir: Path) -> None:
    base, log_path = vision_server
    config = Config(generator=Component(name="openai", options={
        "model": "smollm2", "base_url": base, "vision": True}))
    pipe = Pipeline(config, hashing_index, evidence_chars=120)
    before = _encoded_images(log_path)
    answer = pipe.answer("Is the spleen normal size?", image=sample_dir / "images" /
                         "synpic19605.jpg", task="closed_vqa")
    assert answer.image_seen and answer.used_rag and answer.evidence
    assert answer.text and answer.tokens_out > 0  # random projector: the words mean nothing
    assert _encoded_images(log_path) - before == 1
    assert answer.tokens_in > 50
