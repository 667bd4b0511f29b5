"""Benchmark: fine-tune a CLIP-family dual encoder on MedPix train, validate on dev, then serve it
through an index.

No CLIP weights are available offline, so the model is a *tiny random* one built here (a
transformers ``CLIPModel`` with a word-level tokenizer over the MedPix train captions, or an
open_clip ViT with open_clip's own tokenizer): the figures show the machinery, not a medical CLIP.
Every step is the CLI a user runs:

1. ``mmedrag index`` of the 197 MedPix dev pairs (hashing text encoder: the dual encoder's own
   text tower embeds the reports at registration);
2. ``mmedrag train retriever --model hf:TINY|open_clip:local-dir:TINY --split-field split
   --index IDX`` (train → dev; prints the untrained model's dev figures, epoch 0, beside the
   best epoch's);
3. the saved model reloaded by its own library (``transformers.AutoModel`` /
   ``open_clip.create_model_and_transforms("local-dir:...")``), its dev figures recomputed;
4. ``mmedrag eval retrieval --split-field split --split dev`` through the index.

Usage:
    python benchmarks/finetune_dual.py [--data ../shared/data] [--library transformers|open_clip]
        [--epochs 6] [--out OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(REPO / "tests"))


def _cli(args: list[str]) -> dict:
    import contextlib
    import io

    from mmedrag.cli.main import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(args)
    if code != 0:
        raise SystemExit(f"mmedrag {' '.join(args)} exited {code}")
    return json.loads(buffer.getvalue())


def run(data: Path, library: str, epochs: int, out: Path, batch_size: int = 32,
        lr: float = 5e-4) -> dict:
    from tinymodels import tiny_hf_clip, tiny_open_clip

    from mmedrag.ingest.labelled import read_rows

    medpix = data / "medpix"
    manifest = medpix / "pairs.jsonl"
    rows = read_rows(manifest, text_field="caption")
    if library == "transformers":
        model = tiny_hf_clip(out / "tiny-clip", [r.text for r in rows
                                                  if r.fields["split"] == "train"])
        spec = f"hf:{model}"
    else:
        model = tiny_open_clip(out / "tiny-open-clip")
        spec = f"open_clip:local-dir:{model}"
    dev_manifest = out / "dev.jsonl"
    with dev_manifest.open("w") as handle:
        for line in manifest.read_text().splitlines():
            row = json.loads(line)
            if row["split"] == "dev":
                row["image"] = str(medpix / row["image"])
                handle.write(json.dumps(row) + "\n")
    index = out / "idx"
    config = out / "index.yaml"
    config.write_text("index:\n  text_encoder: {name: hashing}\n  image_encoder: null\n")
    _cli(["index", str(dev_manifest), "--index", str(index), "--text-field", "caption",
          "--domain-field", "modality", "--allow-outside", str(medpix), "--config", str(config),
          "--json"])
    began = time.perf_counter()
    summary = _cli(["train", "retriever", str(manifest), "--model", spec, "--out",
                    str(out / "ft"), "--text-field", "caption", "--split-field", "split",
                    "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", str(lr),
                    "--monitor", "MRR", "--patience", str(epochs), "--index", str(index),
                    "--json"])
    train_seconds = time.perf_counter() - began
    reloaded = reload_in_own_library(library, out / "ft" / "model",
                                     [r for r in rows if r.fields["split"] == "dev"])
    evaluated = _cli(["eval", "retrieval", str(manifest), "--index", str(index),
                      "--text-field", "caption", "--split-field", "split", "--split", "dev",
                      "--json"])
    return {"library": library, "train_pairs": summary["train_pairs"],
            "val_pairs": summary["val_pairs"], "best_epoch": summary["best_epoch"],
            "untrained": summary["untrained"], "val": summary["val"],
            "history": summary["history"], "train_seconds": round(train_seconds, 1),
            "reloaded": reloaded, "eval_retrieval": evaluated["metrics"],
            "eval_retriever": evaluated["retriever"], "eval_queries": evaluated["queries"]}


def reload_in_own_library(library: str, folder: Path, dev: list) -> dict:
    """Dev figures of the saved model loaded by its own library, without mmedrag's loader."""
    import numpy as np
    import torch

    from mmedrag.ingest.images import load_image
    from mmedrag.ir_metrics import rank_by_similarity, retrieval_metrics

    images = [load_image(r.image) for r in dev]
    texts = [r.text for r in dev]
    with torch.no_grad():
        if library == "transformers":
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

            net = AutoModel.from_pretrained(folder).eval()
            tok = AutoTokenizer.from_pretrained(folder)
            proc = AutoImageProcessor.from_pretrained(folder)
            img = net.get_image_features(**proc(images=images, return_tensors="pt"))
            enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
            txt = net.get_text_features(input_ids=enc["input_ids"],
                                        attention_mask=enc["attention_mask"])
            img = getattr(img, "pooler_output", img)
            txt = getattr(txt, "pooler_output", txt)
        else:
            import open_clip

            net, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
            net.eval()
            img = net.encode_image(torch.stack([preprocess(i) for i in images]))
            txt = net.encode_text(tokenizer(texts))
    img = torch.nn.functional.normalize(img, dim=-1).numpy()
    txt = torch.nn.functional.normalize(txt, dim=-1).numpy()
    ids = [str(i) for i in range(len(texts))]
    by_text: dict[str, set[str]] = {}
    for i, text in zip(ids, texts, strict=True):
        by_text.setdefault(" ".join(text.split()).lower(), set()).add(i)
    rankings = rank_by_similarity(img, txt, ids, 10)
    relevant = [by_text[" ".join(t.split()).lower()] for t in texts]
    return {k: round(float(v), 4) for k, v in retrieval_metrics(rankings, relevant).items()
            } | {"class": type(net).__name__, "dims": int(np.asarray(img).shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--library", choices=("transformers", "open_clip"),
                        default="transformers")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mmedrag-dual-"))
    result = run(args.data, args.library, args.epochs, out)
    print(json.dumps(result, indent=1))
    print(f"\n{args.library}: MedPix train {result['train_pairs']} → dev {result['val_pairs']}")
    for name in ("R@1", "R@5", "R@10", "MRR"):
        print(f"  {name:<5} untrained {result['untrained'][name]:.3f}  fine-tuned (epoch "
              f"{result['best_epoch']}) {result['val'][name]:.3f}  reloaded "
              f"{result['reloaded'][name]:.3f}  eval retrieval "
              f"{result['eval_retrieval'][name]:.3f}")


if __name__ == "__main__":
    main()
