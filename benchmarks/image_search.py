"""Benchmark: image→image search quality of the index-time image encoders on MedPix.

Each MedPix dev image queries the MedPix train images (no case is in both splits); P@5 is the
share of the five nearest train images that share the query's modality, body location or plane
(what "find similar cases" needs). Encoders: the weight-free thumbnail and the frozen ImageNet
EfficientNet-Lite0 (``imagenet``), run in the same process; bootstrap 95 % intervals over queries.

Usage:
    python -u benchmarks/image_search.py [--data ../shared/data] [--encoders thumbnail,imagenet]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("modality", "location", "plane")


def main() -> int:
    from mmedrag.ingest.labelled import read_rows
    from mmedrag.ir_metrics import bootstrap_interval
    from mmedrag.registry import REGISTRY

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--encoders", default="thumbnail,imagenet")
    args = parser.parse_args()
    manifest = Path(args.data) / "medpix" / "pairs.jsonl"
    if not manifest.exists():
        print(f"error: {manifest} not found (pass --data)", file=sys.stderr)
        return 2
    rows = read_rows(manifest)
    train = [r for r in rows if r.fields.get("split") == "train"]
    dev = [r for r in rows if r.fields.get("split") == "dev"]
    print(f"MedPix: {len(dev)} dev image queries over {len(train)} train images")
    for name in args.encoders.split(","):
        started = time.perf_counter()
        encoder = REGISTRY.create("image_encoder", name)
        x_train = encoder.encode_images([r.image for r in train])
        x_dev = encoder.encode_images([r.image for r in dev])
        top = np.argsort(-(x_dev @ x_train.T), axis=1, kind="stable")[:, :5]
        cells = []
        for field in FIELDS:
            per_query = np.array([np.mean([train[j].fields.get(field) == q.fields.get(field)
                                           for j in row]) for q, row in zip(dev, top, strict=True)])
            low, high = bootstrap_interval(per_query)
            cells.append(f"{field} {per_query.mean():.3f} [{low:.3f}, {high:.3f}]")
        print(f"{name:<10} P@5  " + "  ".join(cells)
              + f"  ({time.perf_counter() - started:.0f} s encoding {len(rows)} images)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
