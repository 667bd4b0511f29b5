"""Benchmark: domain identification accuracy (CT vs MR on MedPix; CT / MR / X-ray mixed).

1. MedPix modality, trained on the official train split, scored on dev (split by case).
2. Three classes from MedPix (CT, MR; official train/dev split, by case) and covid-cxr (X-ray,
   CT; 20 % of patients held out), so a tower trained on MedPix train never sees a test image.

Each with the router's default features (``handcrafted+imagenet``: grey-level statistics and a
frozen ImageNet EfficientNet-Lite0), any other ``--features`` specs (``handcrafted``, ``imagenet``,
``cnn``: a 128 px CNN trained per task on the training split only, 30 epochs, about 4-5 min a
task on 2 CPU cores), and, when ``--tower PATH`` names a trained image tower (``mmedrag train
retriever``; trained on MedPix *train* only), hand-crafted + tower features.
Prints accuracy with a bootstrap 95 % interval, the confusion matrix and the wall time.

Usage:
    python -u benchmarks/domain_id.py [--data ../shared/data]
        [--features handcrafted+imagenet,handcrafted,imagenet,handcrafted+cnn]
        [--tower models/medpix-tower]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(name: str, manifests: list[Path], features: str, split_field: str | None) -> None:
    from mmedrag.cli.train_domain import format_confusion
    from mmedrag.ir_metrics import bootstrap_interval
    from mmedrag.training.domain import train_domain

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        report = train_domain(manifests, out, field="modality", split_field=split_field,
                              val_fraction=0.2, features=features, threshold=0.0)
    matrix = np.array(report["confusion"])
    correct = np.concatenate([np.ones(int(np.trace(matrix))),
                              np.zeros(int(matrix.sum() - np.trace(matrix)))])
    low, high = bootstrap_interval(correct)
    print(f"\n{name} | features {features}")
    print(f"  train {report['train']} images / {report['train_groups']} cases-patients; "
          f"held out {report['validation']} / {report['validation_groups']}")
    print(f"  accuracy {report['accuracy']:.3f} [{low:.3f}, {high:.3f}]")
    print(f"  wall time {time.perf_counter() - started:.0f} s (training + scoring)", flush=True)
    print("  " + format_confusion(report["columns"], report["labels"],
                                  report["confusion"]).replace("\n", "\n  "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--tower", default=None, help="Trained tower folder for extra features.")
    parser.add_argument("--tasks", default="medpix,mixed", help="medpix, mixed, or both.")
    parser.add_argument("--features", default="handcrafted+imagenet",
                        help="Comma-separated feature specs (default: the router's default).")
    args = parser.parse_args()
    data = Path(args.data)
    medpix, covid = data / "medpix" / "pairs.jsonl", data / "covid-cxr" / "pairs.jsonl"
    for path in (medpix, covid):
        if not path.exists():
            print(f"error: {path} not found (pass --data)", file=sys.stderr)
            return 2
    feature_sets = [f for f in args.features.split(",") if f] + \
        ([f"handcrafted+tower:{args.tower}"] if args.tower else [])
    tasks = args.tasks.split(",")
    for features in feature_sets:
        if "medpix" in tasks:
            run("MedPix CT vs MR (train -> dev)", [medpix], features, "split")
        if "mixed" in tasks:
            run("CT / MR / X-ray (MedPix train -> dev; covid-cxr 20 % of patients held out)",
                [medpix, covid], features, "split")
    return 0


if __name__ == "__main__":
    sys.exit(main())
