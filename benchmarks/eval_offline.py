"""Offline end-to-end evaluation: the default pipeline (SmolLM2-135M via llama.cpp, MiniLM +
thumbnail retrieval) without and with RAG on

* VQA-RAD closed questions (test, 272) with retrieval over MedPix 2.0 captions and VQA-RAD train
  QA pairs, built leakage-free (no VQA-RAD test image, no MedPix/VQA-RAD overlap id, and no
  MedPix case holding one — see mmedrag.evaluation.corpora), and
* PubMedQA* (500, question only) with retrieval over the 1,000 PubMedQA expert abstracts,
  each question's own abstract excluded from its retrieval (``exclude_ids``).

Resumable and cached: run it again with a larger ``--limit`` and only new samples are computed.
Samples are taken in a seeded shuffle (``--seed``), so every prefix is a random subset.

Usage:
    nice -n 10 python benchmarks/eval_offline.py --limit 50          # a first slice
    nice -n 10 python benchmarks/eval_offline.py                     # everything
    mmedrag eval report runs/offline/vqa-rad runs/offline/pubmedqa --out runs/offline/combined

The same with the CLI alone:
    mmedrag eval corpus vqa-rad --index runs/offline/indexes/vqa-rad
    mmedrag eval run --task vqa-rad-closed --index runs/offline/indexes/vqa-rad \
        --out runs/offline/vqa-rad --ablation no-rag,rag --seed 0 [--limit N]
    mmedrag eval corpus pubmedqa --index runs/offline/indexes/pubmedqa
    mmedrag eval run --task pubmedqa --index runs/offline/indexes/pubmedqa \
        --out runs/offline/pubmedqa --ablation no-rag,rag --seed 0 [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_index(directory: Path, records: list, label: str) -> object:
    from mmedrag.index import Index

    done = directory / "index.json"
    index = Index.open(directory, create=not done.exists())
    if index.count() < len(records):
        start = time.perf_counter()
        summary = index.add(records)
        print(f"[{label}] indexed {summary.to_dict()} in {time.perf_counter() - start:.0f}s",
              file=sys.stderr)
    return index


def leak_check(run_dir: Path, data: Path, name: str) -> dict:
    """Evidence that should never appear: a VQA-RAD test image / overlap id, or an own abstract."""
    from mmedrag.evaluation.corpora import overlap_ids, synpic_id, vqa_rad_test_synpics
    from mmedrag.evaluation.runner import read_rows

    rows = [r for r in read_rows(run_dir) if r.get("evidence")]
    if name == "vqa-rad":
        banned = vqa_rad_test_synpics(data) | overlap_ids(data)
        bad = [e["id"] for r in rows for e in r["evidence"] if synpic_id(e["id"]) in banned]
    else:
        bad = [e["id"] for r in rows for e in r["evidence"] if e["id"] == f"pubmed{r['id']}"]
    return {"rows_with_evidence": len(rows),
            "evidence_items": sum(len(r["evidence"]) for r in rows), "leaked": len(bad)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "runs" / "offline"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("vqa-rad", "pubmedqa"), default=None)
    parser.add_argument("--config", default=None, help="pipeline YAML (default: built-in)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mmedrag.config import Config
    from mmedrag.evaluation.corpora import pubmedqa_corpus, vqa_rad_corpus
    from mmedrag.evaluation.report import write_report
    from mmedrag.evaluation.runner import Runner
    from mmedrag.evaluation.tasks import resolve_tasks
    from mmedrag.evaluation.variants import parse_variants
    from mmedrag.pipeline import Pipeline

    data, out = Path(args.data), Path(args.out)
    config = Config.from_yaml(args.config) if args.config else Config()
    plans = []
    if args.only in (None, "vqa-rad"):
        records, report = vqa_rad_corpus(data)
        print(f"[vqa-rad] corpus: {json.dumps(report)}", file=sys.stderr)
        plans.append(("vqa-rad", "vqa-rad-closed", records))
    if args.only in (None, "pubmedqa"):
        plans.append(("pubmedqa", "pubmedqa", pubmedqa_corpus(data)))
    summaries = {}
    for name, task, records in plans:
        index = build_index(out / "indexes" / name, records, name)
        pipeline = Pipeline.from_config(config, index=index)
        runner = Runner(pipeline, resolve_tasks(task), out / name,
                        parse_variants("no-rag,rag"), data_root=data, limit=args.limit,
                        seed=args.seed)
        metrics = runner.run()
        write_report(out / name)
        summaries[name] = {v: {"n": s["metrics"]["n"], "accuracy": s["metrics"].get("accuracy"),
                               "ci95": s["ci95"].get("accuracy"),
                               "majority_baseline": s["metrics"].get("majority_baseline"),
                               "seconds_mean": s["usage"]["seconds_mean"],
                               "tokens_in_mean": s["usage"]["tokens_in_mean"],
                               "tokens_out_mean": s["usage"]["tokens_out_mean"]}
                           for v, s in metrics["tasks"][task]["variants"].items()}
        summaries[name]["over_reliance"] = metrics["tasks"][task].get("over_reliance")
        summaries[name]["leak_check"] = leak_check(out / name, data, name)
        summaries[name]["run"] = metrics["run"]
    if len(plans) == 2 or (out / "vqa-rad").is_dir() and (out / "pubmedqa").is_dir():
        write_report(out / "vqa-rad", out / "pubmedqa", out=out / "combined")
    print(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
