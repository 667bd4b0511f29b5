"""KG-Rank retrieval: loaders, the SQLite graph, entity linking, ranking, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmedrag.cli.main import main
from mmedrag.errors import InputError, UsageError
from mmedrag.records import Query
from mmedrag.registry import REGISTRY
from mmedrag.retrieval.kg import Gazetteer, KGRetriever
from mmedrag.retrieval.kg_loaders import (
    LoadResult,
    Triple,
    load_do_axioms,
    load_generic,
    load_slake,
    load_source,
)
from mmedrag.retrieval.kg_store import KnowledgeGraph

TINY = [("influenza", "has symptom", "fever"), ("influenza", "has symptom", "cough"),
        ("influenza", "has symptom", "muscle pain"),
        ("influenza", "is a", "viral infectious disease"),
        ("influenza", "transmitted by", "respiratory droplets"),
        ("swine influenza", "is a", "influenza"), ("avian influenza", "is a", "influenza"),
        ("viral infectious disease", "is a", "infectious disease"),
        ("migraine", "has symptom", "headache"), ("migraine", "is a", "headache disorder")]


@pytest.fixture(scope="module")
def minilm(minilm_index):  # noqa: ANN001, ANN201
    """all-MiniLM-L6-v2, shared with the session's MiniLM index (loaded once)."""
    return minilm_index.text_encoder


@pytest.fixture(scope="module")
def tiny_kg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-kg")
    with open(folder / "tiny.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["head", "relation", "tail"])
        writer.writerows(TINY)
    result = load_generic(folder / "tiny.csv")
    result.synonyms.append(("flu", "influenza"))
    KnowledgeGraph.build(folder / "kg.sqlite", [result])
    return folder / "kg.sqlite"


def test_store_round_trip_and_gazetteer(tiny_kg: Path) -> None:
    graph = KnowledgeGraph(tiny_kg)
    assert graph.count() == len(TINY)
    names = graph.names()
    assert names["flu"] == "influenza" and names["swine influenza"] == "swine influenza"
    around = graph.triples_of("influenza")
    assert [t.head for t in around[:5]] == ["influenza"] * 5  # outgoing first
    assert {t.head for t in around[5:]} == {"swine influenza", "avian influenza"}
    gazetteer = Gazetteer(names)
    found = gazetteer.find("Is swine influenza worse than flu or migrane?")
    assert [(m.entity, m.surface) for m in found] == [
        ("swine influenza", "swine influenza"), ("influenza", "flu"), ("migraine", "migrane")]
    assert found[0].score == 100 and 85 <= found[2].score < 100
    assert Gazetteer(names, fuzzy_threshold=100).find("migrane") == []


def test_symptom_question_ranks_symptom_triples_first(tiny_kg: Path, minilm) -> None:  # noqa: ANN001
    retriever = KGRetriever(kg_path=tiny_kg, encoder=minilm)
    hits = retriever.retrieve(Query(text="What are the symptoms of the flu?"), k=5)
    top3 = [h.record.text for h in hits[:3]]
    assert sorted(top3) == ["influenza — has symptom — cough", "influenza — has symptom — fever",
                            "influenza — has symptom — muscle pain"]
    first = hits[0]
    assert first.retriever == "kg" and first.record.domain == "kg" and first.rank == 1
    assert first.record.meta["relation"] == "has symptom"
    assert first.record.meta["head"] == "influenza"
    assert first.details["entity"] == "influenza" and first.details["surface"] == "flu"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_two_hops_mmr_and_config(tiny_kg: Path) -> None:
    one = KGRetriever(kg_path=tiny_kg, encoder="hashing")
    two = KGRetriever(kg_path=tiny_kg, encoder="hashing", hops=2)
    query = Query(text="tell me about swine influenza")
    assert {h.details["hop"] for h in one.retrieve(query, 20)} == {1}
    deep = two.retrieve(query, 20)
    assert {h.record.text for h in deep if h.details["hop"] == 2} >= {
        "influenza — has symptom — fever", "avian influenza — is a — influenza"}
    diverse = KGRetriever(kg_path=tiny_kg, encoder="hashing", hops=2, mmr=0.5)
    assert len(diverse.retrieve(query, 4)) == 4
    assert one.retrieve(Query(text="nothing known here"), 5) == []
    config = two.config()
    rebuilt = REGISTRY.create("retriever", "kg", **config["options"])
    assert [h.id for h in rebuilt.retrieve(query, 5)] == [h.id for h in two.retrieve(query, 5)]
    with pytest.raises(UsageError, match="hops"):
        KGRetriever(kg_path=tiny_kg, encoder="hashing", hops=3)
    with pytest.raises(InputError, match="not found"):
        KGRetriever(kg_path=tiny_kg.parent / "missing.sqlite", encoder="hashing")


def test_kg_fuses_with_dense_retrieval_by_rrf(tiny_kg: Path, hashing_index) -> None:  # noqa: ANN001
    from mmedrag.retrieval.dense import DenseRetriever
    from mmedrag.retrieval.hybrid import HybridRetriever

    kg = KGRetriever(index=hashing_index, kg_path=tiny_kg)
    fused = HybridRetriever(hashing_index, retrievers=[DenseRetriever(hashing_index), kg])
    hits = fused.retrieve(Query(text="influenza symptoms on a chest image"), 10)
    assert {h.record.domain for h in hits} >= {"kg"} and len({h.id for h in hits}) == len(hits)


def test_loaders_parse_formats(tmp_path: Path) -> None:
    axioms = tmp_path / "DO-subClassOf-anonymous.tsv"
    axioms.write_text("ID\tLABEL\tSubClass Of [ANON]\n"
                      "DOID:1\tshrimp allergy\t'has allergic trigger' some 'shrimp food product'\n"
                      "DOID:2\tzika\t('transmitted by' some Aedes) or ('has symptom' some fever)\n")
    triples = load_do_axioms(axioms).triples
    assert [(t.head, t.relation, t.tail) for t in triples] == [
        ("shrimp allergy", "has allergic trigger", "shrimp food product"),
        ("zika", "transmitted by", "Aedes"), ("zika", "has symptom", "fever")]
    slake = tmp_path / "en_disease.csv"
    slake.write_text("disease#attribute#value\nPneumonia#location#Lung\nbroken line\n"
                     "Edema#cause#two kinds#cardiogenic\n")
    result = load_slake(slake)
    assert [t.tail for t in result.triples] == ["Lung", "two kinds#cardiogenic"]
    assert result.skipped == 1 and "en_disease.csv:3" in result.errors[0]
    assert result.triples[0].tail_entity is False
    with pytest.raises(InputError, match="head, relation, tail"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        load_source(bad)


def test_kg_cli_build_and_query(tiny_kg: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "triples.tsv"
    source.write_text("head\trelation\ttail\n" + "".join(f"{h}\t{r}\t{t}\n" for h, r, t in TINY))
    assert main(["kg", "build", str(source), "--out", str(tmp_path / "kg.sqlite"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["triples"] == len(TINY)
    assert main(["kg", "query", "symptoms of migraine", "--kg", str(tmp_path / "kg.sqlite"),
                 "--encoder", "hashing", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["entities"][0]["entity"] == "migraine" and len(out["hits"]) == 2
    assert main(["kg", "build", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x")]) == 1
    assert "not found" in capsys.readouterr().err


def test_disease_ontology_symptom_question(shared_data: Path, tmp_path: Path, minilm) -> None:  # noqa: ANN001
    """On the real Disease Ontology tables, X's disease–symptom triples come first."""
    graph = KnowledgeGraph.build(tmp_path / "do.sqlite", [load_source(shared_data / "kg")])
    with open(shared_data / "kg" / "disease-symptom.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    retriever = KGRetriever(kg_path=graph.path, encoder=minilm)
    for disease in ("swine influenza", "myocarditis"):
        symptoms = {r["symptom_label"] for r in rows if r["disease_label"] == disease}
        hits = retriever.retrieve(Query(text=f"What are the symptoms of {disease}?"),
                                  k=len(symptoms) + 3)
        top = hits[: len(symptoms)]
        assert [(h.record.meta["head"], h.record.meta["relation"]) for h in top] == [
            (disease, "has symptom")] * len(symptoms)
        assert {h.record.meta["tail"] for h in top} == symptoms
        assert all(h.record.meta["source"] == "disease-ontology" for h in top)


@pytest.mark.slow
def test_hpo_loader_is_bounded() -> None:
    result = load_source("hpo", max_terms=3000, include_diseases=True, max_annotations_per_term=3)
    relations = {t.relation for t in result.triples}
    assert relations == {"is a", "has phenotype"} and len(result.synonyms) > 1000
    assert all(isinstance(t, Triple) for t in result.triples[:10])
    assert sum(t.relation == "has phenotype" for t in result.triples) <= 3 * 3000
    assert isinstance(result, LoadResult)


def test_reranker_from_config_reorders_the_head(tiny_kg: Path) -> None:
    spec = {"name": "mmr", "options": {"encoder": "hashing", "lambda_mult": 1.0}}
    retriever = KGRetriever(kg_path=tiny_kg, encoder="hashing", reranker=spec, rerank_top=4)
    hits = retriever.retrieve(Query(text="what does influenza cause"), 6)
    head = hits[:4]
    assert all(h.details["rerank"]["by"] == "mmr" for h in head)
    assert [h.details["similarity"] for h in head] == sorted(
        (h.details["similarity"] for h in head), reverse=True)  # λ=1: by cosine alone
    assert [h.rank for h in hits] == list(range(1, 7))
    assert retriever.config()["options"]["reranker"] == spec
