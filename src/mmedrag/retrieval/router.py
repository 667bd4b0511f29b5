"""The domain router used at query time: a calibrated linear probe over frozen image features.

``mmedrag train domain`` (``mmedrag.training.domain``) fits it and saves the folder this module
loads: ``model.joblib`` (scaler + logistic regression, sigmoid-calibrated on grouped folds),
``router.json`` (labels, the manifest field it predicts, the image-feature spec, the threshold,
held-out figures) and, for ``cnn`` features, ``cnn.pt``. ``DomainRouter.route`` returns a
:class:`RouteDecision`; below the threshold it says to search all domains.

Example:
    >>> DomainRouter.load("models/domain", threshold=0.8).route("scan.png")   # doctest: +SKIP
    RouteDecision(domain='CT', probability=0.99, ...)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.features import image_features
from mmedrag.errors import MmedragError, UsageError

FORMAT = "mmedrag-domain/1"
DEFAULT_FEATURES = "handcrafted+imagenet"
# Routers saved before the feature names were unified said "tower:PATH" for the trunk features.
_LEGACY_KINDS = {"tower": "tower-trunk"}


@dataclass
class RouteDecision:
    """Where a query goes: ``domain`` None means "search all domains" (low confidence)."""

    domain: str | None
    probability: float
    probabilities: dict[str, float] = field(default_factory=dict)
    searched_all: bool = False
    reason: str = ""


def current_feature_spec(spec: str, names_version: int) -> str:
    """A saved router's feature spec in today's names (``tower:P`` was the trunk features).

    Example:
        >>> current_feature_spec("handcrafted+tower:m", 1)
        'handcrafted+tower-trunk:m'
    """
    if names_version >= 2:
        return spec
    parts = []
    for part in spec.split("+"):
        kind, sep, target = part.partition(":")
        parts.append(f"{_LEGACY_KINDS.get(kind, kind)}{sep}{target}")
    return "+".join(parts)


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
                 folder: str | Path | None = None,
                 threshold_source: str = "saved with the router") -> None:
        if not 0 <= threshold <= 1:
            raise UsageError(f"router threshold must be in [0, 1], got {threshold}")
        self.threshold_source = threshold_source
        self.model = model
        self.labels = labels
        self.field = field
        self.features = features
        self.threshold = threshold
        self._extractor = extractor
        self.folder = folder

    @classmethod
    def load(cls, path: str | Path, threshold: float | None = None,
             source: str = "config") -> DomainRouter:
        """Load a saved router; ``threshold`` overrides the one saved with it (``source`` says
        who set it, for the trace)."""
        import joblib

        path = Path(path)
        if not (path / "router.json").exists() or not (path / "model.joblib").exists():
            raise UsageError(f"{path}: not a domain router (router.json + model.joblib missing)")
        meta = json.loads((path / "router.json").read_text())
        if meta.get("format") != FORMAT:
            raise MmedragError(f"{path / 'router.json'}: unknown format {meta.get('format')!r}")
        model = joblib.load(path / "model.joblib")
        chosen = meta["threshold"] if threshold is None else threshold
        features = current_feature_spec(meta["features"], int(meta.get("feature_names", 1)))
        return cls(model, meta["labels"], meta["field"], features, float(chosen),
                   folder=path, threshold_source="saved with the router" if threshold is None
                   else source)

    def save(self, path: str | Path, report: dict[str, Any] | None = None) -> None:
        import joblib

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.model, path / "model.joblib")
        meta = {"format": FORMAT, "feature_names": 2, "labels": self.labels,
                "field": self.field, "features": self.features, "threshold": self.threshold,
                "calibration": type(self.model).__name__, "report": report or {}}
        (path / "router.json").write_text(json.dumps(meta, indent=1))

    @property
    def extractor(self) -> Any:
        if self._extractor is None:
            self._extractor = image_features(self.features, self.folder)
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
