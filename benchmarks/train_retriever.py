"""Benchmark: train the offline-default image→report retriever on MedPix train, score it on dev.

Trains the project's image tower (aligned to frozen all-MiniLM-L6-v2) on the MedPix *train* split
only (validation and early stopping on a by-case split inside train; dev is never seen), then
retrieves among the 197 dev captions for each dev image. A hit is a caption of the query's own
pair or one identical to its caption. "tower + router" is the domain-aware system: a router
(trained on MedPix train) predicts the modality and that modality's captions are searched first.
Baselines, same queries: (a) the untrained tower (same
architecture, random weights), (b) modality-only: the dev captions of the query's true modality
first, in random order within (expected over 200 random orders). Prints R@1/5/10, MRR, nDCG@10
with bootstrap 95 % intervals, and the paired bootstrap interval of trained minus each baseline.

With ``--per-domain``, one tower per modality is also trained (``train_retriever(domain=...)``,
MMed-RAG's domain-specific retrievers, each on its modality's train pairs only) and scored as
"domain towers + router": the router's predicted modality picks the tower and that
modality's captions come first.

Usage:
    python benchmarks/train_retriever.py [--data ../shared/data] [--out OUT] [--reuse]
        [--per-domain]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def modality_only(dev: list, relevant: list[set[str]], draws: int = 200, seed: int = 0) -> dict:
    """Per-query expected metrics of the modality-first random ranking."""
    from mmedrag.ir_metrics import per_query_metrics

    rng = np.random.default_rng(seed)
    ids = [r.id for r in dev]
    total: dict[str, np.ndarray] = {}
    for _ in range(draws):
        rankings = []
        for row in dev:
            mine = row.fields["modality"]
            same = [i for i, r in zip(ids, dev, strict=True) if r.fields["modality"] == mine]
            other = [i for i, r in zip(ids, dev, strict=True) if r.fields["modality"] != mine]
            rankings.append(list(rng.permutation(same)) + list(rng.permutation(other)))
        for name, values in per_query_metrics(rankings, relevant).items():
            total[name] = total.get(name, 0) + values / draws
    return total


def tower_values(encoder_or_model: object, dev: list, captions: np.ndarray,
                 relevant: list[set[str]], routed: list[str | None] | None = None) -> dict:
    """Per-query metrics of tower search; ``routed``: each query's predicted domain, whose
    captions come first (the index's domain filter), the rest after."""
    from mmedrag.ir_metrics import per_query_metrics

    ids = [r.id for r in dev]
    queries = encoder_or_model.encode_images([r.image for r in dev])  # type: ignore[attr-defined]
    scores = queries @ captions.T
    if routed is not None:
        domain = np.array([r.fields["modality"] for r in dev])
        scores = scores + 10.0 * (np.array(routed)[:, None] == domain[None, :])
    rankings = [[ids[j] for j in np.argsort(-row, kind="stable")[:10]] for row in scores]
    return per_query_metrics(rankings, relevant)


def route_dev(medpix: Path, tower: Path, dev: list) -> list[str | None]:
    """Modality predicted by a router trained on MedPix train, with the router's default
    features (hand-crafted + frozen ImageNet EfficientNet-Lite0; adding the tower's trunk
    features scored lower, as the tower has seen the train images)."""
    from mmedrag.retrieval.router import DomainRouter
    from mmedrag.training.domain import train_domain

    report = train_domain([medpix / "pairs.jsonl"], tower / "router", field="modality",
                          split_field="split")
    print(f"router (trained on MedPix train): dev modality accuracy {report['accuracy']:.3f}")
    router = DomainRouter.load(tower / "router")
    return [d.domain for d in router.route_many([r.image for r in dev])]


class _Untrained:
    """The same tower architecture with its random initial weights."""

    def __init__(self, like: object, seed: int = 0) -> None:
        import torch

        from mmedrag.encoders.tower import ImageTower

        torch.manual_seed(seed)
        self.model = ImageTower(**like.meta["tower"]).eval()  # type: ignore[attr-defined]
        self.size = like.size  # type: ignore[attr-defined]
        self.extra_spec = like.extra_spec  # type: ignore[attr-defined]

    def encode_images(self, images: list) -> np.ndarray:
        from mmedrag.encoders.pixels import preload_images
        from mmedrag.encoders.tower import embed_pixels, extra_features

        extra = extra_features(images, self.extra_spec) if self.extra_spec else None
        return embed_pixels(self.model, preload_images(images, self.size), extra=extra)


def print_table(systems: dict[str, dict], reference: str) -> None:
    from mmedrag.ir_metrics import bootstrap_interval, paired_difference

    names = ["R@1", "R@5", "R@10", "MRR", "nDCG@10"]
    print(f"{'system':<22}" + "".join(f"{n:>22}" for n in names))
    for system, values in systems.items():
        cells = []
        for n in names:
            low, high = bootstrap_interval(values[n])
            cells.append(f"{values[n].mean():.3f} [{low:.3f},{high:.3f}]")
        print(f"{system:<22}" + "".join(f"{c:>22}" for c in cells))
    print(f"\npaired bootstrap 95 % interval of {reference} minus baseline:")
    for system, values in systems.items():
        if system == reference:
            continue
        cells = []
        for n in names:
            diff, low, high = paired_difference(systems[reference][n], values[n])
            cells.append(f"{diff:+.3f} [{low:+.3f},{high:+.3f}]")
        print(f"{'vs ' + system:<22}" + "".join(f"{c:>22}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=None, help="Output folder (default: a temp folder).")
    parser.add_argument("--reuse", action="store_true", help="Score an already trained --out.")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-domain", action="store_true",
                        help="Also train and score one tower per modality (OUT/domain-<M>).")
    parser.add_argument("--val-fraction", type=float, default=0.12,
                        help="Share of MedPix train cases held out for early stopping.")
    args = parser.parse_args()

    import torch

    from mmedrag.encoders.text import SentenceTransformerEncoder
    from mmedrag.encoders.tower import TrainedTowerEncoder
    from mmedrag.ingest.labelled import read_rows
    from mmedrag.training.contrastive import TowerTrainConfig
    from mmedrag.training.retriever import train_retriever

    torch.set_num_threads(args.threads)
    medpix = Path(args.data) / "medpix"
    if not (medpix / "pairs.jsonl").exists():
        print(f"error: {medpix / 'pairs.jsonl'} not found (pass --data)", file=sys.stderr)
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="tower-"))
    text = SentenceTransformerEncoder()

    def train(folder: Path, domain: str | None = None) -> dict:
        """One tower on MedPix train (optionally one modality), the same settings for all."""
        cfg = TowerTrainConfig(epochs=args.epochs, size=args.size, width=args.width,
                               seed=args.seed)
        return train_retriever(medpix / "pairs.jsonl", folder, domain=domain,
                               domain_field="modality", subset=("split", "train"),
                               val_fraction=args.val_fraction,
                               case_text=medpix / "cases.jsonl", config=cfg,
                               text_encoder=text, progress=sys.stderr.isatty())

    if not args.reuse:
        wall, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
        summary = train(out)
        wall = time.perf_counter() - wall
        cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu
        print(f"trained on {summary['train_pairs']} train pairs (validation {summary['val_pairs']}"
              f" pairs of held-out train cases), best epoch {summary['best_epoch']} of "
              f"{len(summary['history'])}; wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min "
              f"({args.threads} threads; machine shared with other jobs)")
    domains = ("CT", "MR")
    if args.per_domain:
        for domain in domains:
            folder = out / f"domain-{domain}"
            if args.reuse and (folder / "tower.pt").exists():
                continue
            wall = time.perf_counter()
            summary = train(folder, domain)
            print(f"{domain} tower: {summary['train_pairs']} train pairs, best epoch "
                  f"{summary['best_epoch']}; wall {(time.perf_counter() - wall) / 60:.1f} min")
    rows = read_rows(medpix / "pairs.jsonl", require_text=True)
    dev = [r for r in rows if r.fields["split"] == "dev"]
    captions = text.encode_texts([r.text for r in dev])
    relevant = [{r.id} | {o.id for o in dev if o.text == r.text} for r in dev]
    trained = TrainedTowerEncoder(out)
    routed = route_dev(medpix, out, dev)
    systems = {"tower + router": tower_values(trained, dev, captions, relevant, routed),
               "trained tower": tower_values(trained, dev, captions, relevant),
               "untrained tower": tower_values(_Untrained(trained), dev, captions, relevant),
               "modality-only": modality_only(dev, relevant)}
    if args.per_domain:
        per = {d: tower_values(TrainedTowerEncoder(out / f"domain-{d}"), dev, captions,
                               relevant, routed) for d in domains}
        chosen = [d if d in per else domains[0] for d in routed]
        systems = {"domain towers + router": {
            name: np.array([per[d][name][i] for i, d in enumerate(chosen)])
            for name in systems["tower + router"]}, **systems}
    print(f"\nMedPix dev: {len(dev)} image queries over {len(dev)} captions "
          f"({len({r.text for r in dev})} distinct); model {out}")
    print_table(systems, "tower + router")
    return 0


if __name__ == "__main__":
    sys.exit(main())
