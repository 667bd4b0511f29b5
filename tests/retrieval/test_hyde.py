"""HyDE query expansion: a scripted generator double, and the real llama.cpp SmolLM2 (slow)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mmedrag.encoders.protocol import l2_normalise
from mmedrag.errors import UsageError
from mmedrag.records import Generation, Query
from mmedrag.retrieval.dense import DenseRetriever
from mmedrag.retrieval.hyde import HYDE_PROMPT, HydeRetriever, hypothetical_query

TARGET = "vqarad_synpic20260"  # nodular liver → cirrhosis; aortic atherosclerotic calcification
QUESTION = "Why does my belly scan show a scarred bumpy organ and hardened main artery?"
HYPOTHESIS = "Nodular liver suggests cirrhosis. Atherosclerotic calcification in the aorta."


class ScriptedGenerator:
    """Test double for the LLM: answers a known question with a fixed hypothetical report."""

    name = "scripted"
    sees_images = False

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.prompts: list[str] = []

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: Any = None) -> Generation:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        text = next((a for q, a in self.answers.items() if q in prompt), "")
        return Generation(text=text, tokens_in=len(prompt.split()), tokens_out=len(text.split()))


def rank_of(hits: list, record_id: str) -> int | None:
    return next((h.rank for h in hits if h.id == record_id), None)


@pytest.mark.parametrize("fusion", ["mean", "rrf"])
def test_hyde_finds_the_report_plain_retrieval_misses(hashing_index, fusion: str) -> None:  # noqa: ANN001
    generator = ScriptedGenerator({QUESTION: HYPOTHESIS})
    plain = DenseRetriever(hashing_index, exact=True).retrieve(Query(text=QUESTION), 5)
    retriever = HydeRetriever(hashing_index, generator=generator, weight=0.7, fusion=fusion,
                              base=DenseRetriever(hashing_index, exact=True))
    hits = retriever.retrieve(Query(text=QUESTION), 5)
    assert rank_of(plain, TARGET) is None  # the lay question shares no words with the report
    # vector fusion puts the report first; rank fusion (which also rewards documents ranked by
    # both lists) brings it into the top 3
    assert rank_of(hits, TARGET) == 1 if fusion == "mean" else rank_of(hits, TARGET) <= 3
    assert hits[0].retriever == "hyde" and hits[0].details["hyde"]["hypothesis"] == HYPOTHESIS
    assert generator.prompts == [HYDE_PROMPT.format(question=QUESTION)]


def test_mean_fusion_is_the_weighted_mean_of_normalised_vectors(hashing_index) -> None:  # noqa: ANN001
    generator = ScriptedGenerator({QUESTION: HYPOTHESIS})
    hits = HydeRetriever(hashing_index, generator=generator, weight=0.3).retrieve(
        Query(text=QUESTION), 36)
    encoder = hashing_index.text_encoder
    q, d = encoder.encode_texts([QUESTION, HYPOTHESIS])
    fused = l2_normalise(0.7 * q + 0.3 * d)[0]
    stored = hashing_index.text_store.vectors([h.id for h in hits])
    assert np.allclose([h.score for h in hits], stored @ fused, atol=1e-5)
    # weight 0 is plain dense retrieval
    zero = HydeRetriever(hashing_index, generator=generator, weight=0.0).retrieve(
        Query(text=QUESTION), 5)
    plain = DenseRetriever(hashing_index, exact=True).retrieve(Query(text=QUESTION), 5)
    assert [h.id for h in zero] == [h.id for h in plain]


def test_empty_hypothesis_falls_back_and_bad_options(hashing_index) -> None:  # noqa: ANN001
    silent = ScriptedGenerator({})
    hyde = HydeRetriever(hashing_index, generator=silent)
    hits = hyde.retrieve(Query(text="pleural effusion"), 3)
    plain = DenseRetriever(hashing_index, exact=True).retrieve(Query(text="pleural effusion"), 3)
    assert [h.id for h in hits] == [h.id for h in plain]
    assert hypothetical_query("pleural effusion", silent) == "pleural effusion"
    with pytest.raises(UsageError, match="fusion"):
        HydeRetriever(hashing_index, generator=silent, fusion="max")
    with pytest.raises(UsageError, match="generator"):
        HydeRetriever(hashing_index)
    assert HydeRetriever(hashing_index, generator=silent).config() == {
        "name": "hyde", "options": {"weight": 0.5, "fusion": "mean", "max_tokens": 128}}


@pytest.mark.slow
def test_hyde_with_real_smollm2(hashing_index) -> None:  # noqa: ANN001
    llama = pytest.importorskip("mmedrag.generation.llama_cpp")
    generator = llama.LlamaCppGenerator(n_ctx=512)
    retriever = HydeRetriever(hashing_index, generator=generator, weight=0.5, max_tokens=48)
    hits = retriever.retrieve(Query(text="Is there a pneumothorax on the chest x-ray?"), 5)
    assert len(hits) == 5 and len(retriever.last_hypothesis.split()) >= 3
    assert hits[0].details["hyde"]["hypothesis"] == retriever.last_hypothesis
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
