"""Pipeline logic on a real index built from the packaged sample, with the rule-based echo
generator (exact expectations) and one real llama.cpp run."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mmedrag.artefacts import RouterArtefact
from mmedrag.config import Component, Config
from mmedrag.errors import UsageError
from mmedrag.pipeline import Pipeline, RetrieveOnDemand, build

SPLEEN_IMAGE = "images/synpic19605.jpg"
SPLEEN_ID = "vqarad_synpic19605"


def _config(**update) -> Config:
    base = {"generator": {"name": "echo"}, "selector": {"name": "fixed", "options": {"k": 3}}}
    return Config.model_validate({**base, **update})


@pytest.fixture(scope="module")
def pipe(hashing_index) -> Pipeline:
    return Pipeline(_config(), hashing_index)


def test_rag_answer_cites_retrieved_evidence(pipe, sample_dir) -> None:
    answer = pipe.answer("Is the spleen normal size?", image=sample_dir / SPLEEN_IMAGE,
                         task="closed_vqa")
    assert answer.used_rag
    assert len(answer.evidence) == 3
    assert answer.evidence[0].hit.id == SPLEEN_ID          # image→image finds its own pair
    assert [e.cited for e in answer.evidence] == [True, False, False]
    assert answer.parsed == "yes"                            # its pair says "A: Yes." many times
    assert answer.selection["k"] == 3
    assert not answer.image_seen
    assert any("image itself was not seen by echo" in line for line in answer.trace)
    assert set(answer.seconds) >= {"route", "retrieve", "rerank", "select", "generate", "total"}
    assert answer.seconds["total"] >= answer.seconds["retrieve"]
    assert "[1]" in answer.messages[-1]["content"]
    json.loads(answer.to_json())


def test_no_rag_skips_retrieval(pipe, sample_dir) -> None:
    answer = pipe.answer("Is the spleen normal size?", image=sample_dir / SPLEEN_IMAGE,
                         task="closed_vqa", use_rag=False)
    assert not answer.used_rag and answer.evidence == []
    assert answer.seconds["retrieve"] == 0.0
    assert "Evidence" not in answer.messages[-1]["content"]
    assert answer.yes_probability == pytest.approx(0.5)


def test_exclude_ids_removes_the_query_pair(pipe, sample_dir) -> None:
    answer = pipe.answer("Is the spleen normal size?", image=sample_dir / SPLEEN_IMAGE,
                         task="closed_vqa", exclude_ids={SPLEEN_ID})
    assert SPLEEN_ID not in [e.hit.id for e in answer.evidence]
    assert any("excluded 1 record" in line for line in answer.trace)


def test_retrieval_image_differs_from_seen_image(pipe, sample_dir) -> None:
    noise = Image.new("RGB", (64, 64), color=(127, 127, 127))
    question = "Describe the image"
    real_hits = pipe.retrieve(question, sample_dir / SPLEEN_IMAGE).hits
    noise_hits = pipe.retrieve(question, noise).hits
    answer = pipe.answer(question, image=noise, task="open_vqa",
                         retrieval_image=sample_dir / SPLEEN_IMAGE)
    assert [e.hit.id for e in answer.evidence] == [h.id for h in real_hits]
    assert [h.id for h in noise_hits] != [h.id for h in real_hits]
    assert any("not seen by echo" in line for line in answer.trace)


def test_given_evidence_skips_retrieval(pipe, hashing_index) -> None:
    records = hashing_index.get([SPLEEN_ID])
    from mmedrag.records import Hit

    hits = [Hit(record=records[0], score=1.0, retriever="given")]
    answer = pipe.answer("Is the spleen normal size?", task="closed_vqa", evidence=hits)
    assert [e.hit.id for e in answer.evidence] == [SPLEEN_ID]
    assert answer.parsed == "yes" and answer.evidence[0].cited
    assert "given by the caller" in answer.selection["reason"]


def test_retrieve_on_demand(hashing_index) -> None:
    with pytest.raises(UsageError, match="RetrieveOnDemand"):
        Pipeline(_config(retrieve_on_demand=0.9), hashing_index)
    low = build(_config(retrieve_on_demand=0.9), hashing_index)
    assert isinstance(low, RetrieveOnDemand) and low.config.retrieve_on_demand == 0.9
    answer = low.answer("What is seen in the kidney?", task="open_vqa")
    assert answer.used_rag and answer.evidence
    assert any("so evidence was retrieved" in line for line in answer.trace)
    assert "generate_without_retrieval" in answer.seconds
    high = build(_config(retrieve_on_demand=0.1), hashing_index)
    answer = high.answer("What is seen in the kidney?", task="open_vqa")
    assert not answer.used_rag and answer.evidence == []
    assert any("answered without retrieval" in line for line in answer.trace)


def test_mcq_and_with_overrides(pipe) -> None:
    options = {"A": "nephroblastomatosis", "B": "appendicitis", "C": "fracture"}
    answer = pipe.answer("What is seen in the posterolateral kidney?", task="mcq", options=options)
    assert answer.parsed == "A"
    one = pipe.with_overrides(selector=Component(name="fixed", options={"k": 1}), k=4)
    assert one.index is pipe.index and one.generator is pipe.generator
    answer = one.answer("What is seen in the posterolateral kidney?", task="mcq", options=options)
    assert len(answer.evidence) == 1 and pipe.config.selector.options["k"] == 3
    found = one.retrieve("kidney lesion")
    assert len(found.candidates) == 4 and found.selection.k == 1 and len(found.hits) == 1


def test_bad_usage_is_reported(pipe) -> None:
    with pytest.raises(UsageError, match="unknown task"):
        pipe.answer("x", task="essay")
    with pytest.raises(UsageError, match="needs options"):
        pipe.answer("x", task="mcq")
    with pytest.raises(UsageError, match="no index"):
        Pipeline(_config(), None).retrieve("x")
    bare = Pipeline(_config(), None).answer("Is it?", task="closed_vqa", use_rag=False)
    assert bare.parsed == "no"


@pytest.fixture(scope="module")
def routed_index(sample_dir, tmp_path_factory):  # noqa: ANN001, ANN201
    """A private hashing index with the image domain router trained on the sample."""
    from mmedrag.config import IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest
    from mmedrag.training.domain import train_domain

    folder = tmp_path_factory.mktemp("routed")
    index = Index.open(folder / "index", create=True,
                       config=IndexConfig(text_encoder=Component(name="hashing")))
    index.add(read_manifest(sample_dir / "pairs.jsonl").records, progress=False)
    train_domain([sample_dir / "pairs.jsonl"], folder / "router", field="domain", seed=0)
    index.set_artefacts(index.artefacts.model_copy(
        update={"router": RouterArtefact(path=str(folder / "router"), threshold=0.0)}))
    return index


def test_router_restricts_retrieval_to_the_predicted_domain(routed_index, sample_dir) -> None:
    pipe = Pipeline(_config(), routed_index)
    found = pipe.retrieve("Is the spleen normal size?", sample_dir / SPLEEN_IMAGE)
    domain = found.route.to_dict()["domain"]
    assert domain in ("ABD", "CHEST", "HEAD") and found.domain == domain
    assert {h.record.domain for h in found.hits} == {domain}
    assert any(line.startswith(f"routed to domain {domain}") for line in found.trace)
    assert found.route.threshold == 0.0
    assert found.route.threshold_source == "registered with the index"
    text_only = pipe.retrieve("Is the spleen normal size?")
    assert text_only.domain is None
    assert any("text-only question" in line for line in text_only.trace)
    saved = routed_index.artefacts
    routed_index.set_artefacts(saved.model_copy(update={"router": saved.router.model_copy(
        update={"threshold": 1.0})}))
    try:
        unsure = Pipeline(_config(), routed_index)
        found = unsure.retrieve("Is the spleen normal size?", sample_dir / SPLEEN_IMAGE)
    finally:
        routed_index.set_artefacts(saved)
    assert found.domain is None and found.route.to_dict()["searched_all"]
    assert any("router unsure" in line for line in found.trace)


def test_config_router_threshold_overrides_the_saved_one(routed_index, sample_dir) -> None:
    cfg = _config(retrieval={"router_threshold": 1.0})
    found = Pipeline(cfg, routed_index).retrieve("Is it?", sample_dir / SPLEEN_IMAGE)
    assert found.domain is None and found.route.threshold == 1.0
    assert found.route.threshold_source == "config retrieval.router_threshold"
    assert any("config retrieval.router_threshold" in line for line in found.trace)


def test_hyde_reranker_and_calibrated_selector_are_wired(hashing_index) -> None:
    from mmedrag.selection.calibrated import calibrate

    cfg = _config(retrieval={"hyde": True, "k": 6}, reranker={"name": "mmr"},
                  selector={"name": "calibrated",
                            "options": {"calibration": calibrate({2: [True] * 80}).to_dict()}})
    answer = Pipeline(cfg, hashing_index).answer("What is seen in the kidney?", task="open_vqa")
    assert any(line.startswith("HyDE:") for line in answer.trace)
    assert any("reranked by mmr" in line for line in answer.trace)
    assert len(answer.evidence) == 2 and answer.selection["k"] == 2
    assert "calibrated k=2" in answer.selection["reason"]


def test_calibrated_selector_reads_the_index_calibration(routed_index) -> None:
    from mmedrag.selection.calibrated import calibrate

    cfg = _config(selector={"name": "calibrated"})
    with pytest.raises(UsageError, match="no calibration is stored"):
        Pipeline(cfg, routed_index).retrieve("kidney")
    calibration = calibrate({1: [True] * 80, 3: [True] * 80}).to_dict()
    routed_index.set_artefacts(routed_index.artefacts.model_copy(
        update={"calibration": calibration}))
    found = Pipeline(cfg, routed_index).retrieve("kidney")
    assert found.selection.k == len(found.hits) and found.selection.k in (1, 3)


@pytest.mark.slow
def test_real_llama_cpp_answer(hashing_index, sample_dir) -> None:
    pytest.importorskip("llama_cpp")
    cfg = _config(generator={"name": "llama-cpp", "options": {"n_ctx": 1024, "n_threads": 1}},
                  selector={"name": "fixed", "options": {"k": 2}})
    pipe = Pipeline(cfg, hashing_index, evidence_chars=300)
    answer = pipe.answer("Is the spleen normal size?", image=sample_dir / SPLEEN_IMAGE,
                         task="closed_vqa")
    assert answer.parsed in ("yes", "no")
    assert answer.tokens_in > 100 and answer.tokens_out > 0
    assert 0.0 < answer.yes_probability < 1.0
    assert any("not seen by SmolLM2" in line for line in answer.trace)
    assert answer.seconds["generate"] > 0 and answer.seconds["total"] >= answer.seconds["generate"]


def test_kg_triples_join_the_evidence(hashing_index, tmp_path) -> None:
    from mmedrag.retrieval.kg_loaders import load_generic
    from mmedrag.retrieval.kg_store import KnowledgeGraph

    source = tmp_path / "kg.csv"
    source.write_text("head,relation,tail\nnephroblastomatosis,is a,kidney disease\n"
                      "nephroblastomatosis,precursor of,wilms tumor\n", encoding="utf-8")
    KnowledgeGraph.build(tmp_path / "kg.sqlite", [load_generic(source)])
    cfg = _config(retrieval={"kg": {"name": "kg", "options": {
        "kg_path": str(tmp_path / "kg.sqlite"), "encoder": "hashing"}}},
        selector={"name": "fixed", "options": {"k": 10}})
    answer = Pipeline(cfg, hashing_index).answer("What is nephroblastomatosis?", task="open_vqa")
    sources = [set(e.hit.details.get("sources", {})) for e in answer.evidence]
    assert any("kg" in s for s in sources)
    texts = " ".join(e.hit.record.text for e in answer.evidence)
    assert "wilms tumor" in texts.lower()


def test_closed_text_that_contradicts_the_parsed_answer_is_flagged_and_counted(
        hashing_index) -> None:
    from mmedrag.cli.ask import render_answer
    from mmedrag.evaluation.metrics import closed_vqa_metrics
    from mmedrag.evaluation.tasks import Sample
    from mmedrag.evaluation.tasks.builtin import score_closed
    from mmedrag.generation.echo import EchoGenerator
    from mmedrag.records import Generation

    class Says(EchoGenerator):
        def __init__(self, text: str, p_yes: float) -> None:
            super().__init__(name="says")
            self.text, self.p_yes = text, p_yes

        def generate(self, messages, images=None, params=None) -> Generation:  # noqa: ANN001
            return Generation(self.text, 10, 5, yes_probability=self.p_yes, model="says")

    cfg = _config()
    contradicting = Pipeline(cfg, hashing_index, generator=Says(
        "There is evidence of a pneumoperitoneum.", 0.2)).answer("Is there free air?",
                                                                task="closed_vqa")
    assert contradicting.parsed == "no" and len(contradicting.warnings) == 1
    assert "reads as 'yes'" in contradicting.warnings[0]
    assert "WARNING: the answer text reads as 'yes'" in render_answer(contradicting)
    agreeing = Pipeline(cfg, hashing_index, generator=Says(
        "There is evidence of a pneumoperitoneum.", 0.8)).answer("Is there free air?",
                                                                task="closed_vqa")
    assert agreeing.parsed == "yes" and agreeing.warnings == []
    sample = Sample(id="1", question="Is there free air?", reference="yes")
    stats = [score_closed(sample, contradicting), score_closed(sample, agreeing)]
    assert [s["disagrees"] for s in stats] == [True, False]
    assert closed_vqa_metrics(stats)["text_parse_disagreement_rate"] == 0.5


def test_selection_trace_says_it_once(pipe) -> None:
    answer = Pipeline(_config(selector={"name": "gap", "options": {"gamma": 0.05}}),
                      pipe.index).answer("What is seen in the kidney?", task="open_vqa")
    line = next(t for t in answer.trace if t.startswith("selector gap:"))
    assert line.count("kept") == 1, line


def test_report_task_without_a_question(pipe, sample_dir) -> None:
    answer = pipe.answer("", image=sample_dir / SPLEEN_IMAGE, task="report")
    assert answer.question == "Write the radiology report for this image."
    assert answer.evidence[0].hit.id == SPLEEN_ID and answer.text.endswith("[1]")
    with pytest.raises(UsageError, match="the question is empty"):
        pipe.answer("  ", task="report")
