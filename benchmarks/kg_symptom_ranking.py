"""KG-Rank on the Disease Ontology: is "What are the symptoms of X?" answered by X's symptoms?

For every disease with at least ``--min-symptoms`` symptoms in ``disease-symptom.tsv`` (first
``--limit`` by label), the question "What are the symptoms of X?" is asked of a KGRetriever over
the whole ``kg/`` folder (Disease Ontology + SLAKE, ~25k triples). With S = X's symptoms:

* ``precision@|S|``: share of the top |S| triples that are "X — has symptom — s";
* ``all_first``: share of questions whose top |S| are exactly X's symptom triples;
* ``entity_found``: share of questions where the gazetteer linked X.

Timing: the baseline runs first with a cold embedding cache; KG-Rank then reuses the cached
triple embeddings, so only the first ``seconds_per_question`` includes encoding.

The same retriever without the relation-intent term and direction weight (pure embedding
similarity, as in KG-Rank's first ranking stage) is the baseline, run in the same process.

Usage:
    python benchmarks/kg_symptom_ranking.py [--data ../shared/data] [--limit 100]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _questions(data: Path, min_symptoms: int, limit: int) -> dict[str, set[str]]:
    symptoms: dict[str, set[str]] = {}
    with open(data / "kg" / "disease-symptom.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            symptoms.setdefault(row["disease_label"], set()).add(row["symptom_label"])
    chosen = sorted(d for d, s in symptoms.items() if len(s) >= min_symptoms)
    return {d: symptoms[d] for d in chosen[:limit]}


def _score(retriever, questions: dict[str, set[str]]) -> dict[str, float]:  # noqa: ANN001
    from mmedrag.records import Query
    from mmedrag.retrieval.kg_store import normalise

    precision, exact, found = [], 0, 0
    started = time.perf_counter()
    for disease, symptoms in questions.items():
        question = f"What are the symptoms of {disease}?"
        found += any(m.entity == normalise(disease) for m in retriever.entities(question))
        hits = retriever.retrieve(Query(text=question), len(symptoms))
        good = sum(h.record.meta["head"] == disease and h.record.meta["relation"] == "has symptom"
                   and h.record.meta["tail"] in symptoms for h in hits)
        precision.append(good / len(symptoms))
        exact += good == len(symptoms)
    n = len(questions)
    return {"questions": n, "precision_at_S": round(sum(precision) / n, 4),
            "all_first": round(exact / n, 4), "entity_found": round(found / n, 4),
            "seconds_per_question": round((time.perf_counter() - started) / n, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--min-symptoms", type=int, default=2)
    parser.add_argument("--encoder", default="sentence-transformers")
    args = parser.parse_args()

    from mmedrag.registry import REGISTRY
    from mmedrag.retrieval.kg import KGRetriever
    from mmedrag.retrieval.kg_loaders import load_source
    from mmedrag.retrieval.kg_store import KnowledgeGraph

    data = Path(args.data)
    questions = _questions(data, args.min_symptoms, args.limit)
    encoder = REGISTRY.create("text_encoder", args.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        graph = KnowledgeGraph.build(Path(tmp) / "kg.sqlite", [load_source(data / "kg")])
        build_s = time.perf_counter() - started
        kg_rank = KGRetriever(kg_path=graph.path, encoder=encoder)
        baseline = KGRetriever(kg_path=graph.path, encoder=encoder, relation_weight=0.0,
                               incoming_weight=1.0)
        result = {"triples": graph.count(), "build_seconds": round(build_s, 2),
                  "encoder": args.encoder, "similarity_only": _score(baseline, questions),
                  "kg_rank": _score(kg_rank, questions)}
    base, ours = result["similarity_only"], result["kg_rank"]
    result["precision_ratio"] = round(ours["precision_at_S"] / max(base["precision_at_S"], 1e-9), 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
