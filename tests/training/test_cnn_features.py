"""The router's ``cnn`` features: trained on the training split, saved, reloaded, and useful."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmedrag.encoders.cnn import CnnFeatures
from mmedrag.encoders.features import image_features as feature_extractor
from mmedrag.errors import MmedragError, UsageError
from mmedrag.retrieval.router import DomainRouter
from mmedrag.training.cnn_features import save_cnn, train_cnn


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Bright discs on black ("CT-like") vs smooth shaded fields with no edge ("MR-like")."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    pixels, labels = [], []
    for number in range(n):
        if number % 2:
            cx, cy, r = rng.uniform(0.35, 0.65, 2).tolist() + [rng.uniform(0.2, 0.35)]
            image = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) * rng.uniform(0.6, 1.0)
            labels.append("disc")
        else:
            angle = rng.uniform(0, 2 * np.pi)
            image = 0.5 + 0.4 * np.sin(6 * (np.cos(angle) * xx + np.sin(angle) * yy))
            labels.append("stripes")
        image = image + rng.normal(0, 0.05, image.shape)
        pixels.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.stack(pixels), labels


def test_cnn_learns_saves_and_reloads(tmp_path: Path) -> None:
    pixels, labels = _synthetic(64, seed=0)
    model, classes = train_cnn(pixels, labels, epochs=3, batch_size=32)
    assert classes == ["disc", "stripes"]
    save_cnn(model, classes, tmp_path / "cnn.pt")
    features = CnnFeatures(tmp_path / "cnn.pt")
    test_pixels, test_labels = _synthetic(40, seed=1)
    x = features.encode_pixels(test_pixels)
    assert x.shape == (40, features.dim) and np.isfinite(x).all()
    assert np.allclose(CnnFeatures(tmp_path / "cnn.pt").encode_pixels(test_pixels), x, atol=1e-5)
    # a nearest-class-mean probe on the frozen features separates unseen images
    y = np.array(test_labels)
    train_x = features.encode_pixels(pixels)
    means = {c: train_x[np.array(labels) == c].mean(0) for c in classes}
    predicted = [min(classes, key=lambda c: np.linalg.norm(row - means[c])) for row in x]
    assert np.mean(np.array(predicted) == y) >= 0.9


def test_cnn_features_need_their_folder_and_weights(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="trained with the router"):
        feature_extractor("handcrafted+cnn")
    with pytest.raises(MmedragError, match="CNN weights not found"):
        feature_extractor("cnn", tmp_path)
    (tmp_path / "cnn.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MmedragError, match="not a compatible mmedrag CNN"):
        CnnFeatures(tmp_path / "cnn.pt")


def test_router_with_cnn_round_trips(sample_dir: Path, tmp_path: Path) -> None:
    from mmedrag.ingest.labelled import read_rows
    from mmedrag.training.domain import train_domain

    report = train_domain([sample_dir / "pairs.jsonl"], tmp_path, field="domain",
                          val_fraction=0.3, features="cnn", cnn_epochs=3)
    assert (tmp_path / "cnn.pt").exists() and report["features"] == "cnn"
    rows = read_rows(sample_dir / "pairs.jsonl", label_field="domain")
    router = DomainRouter.load(tmp_path, threshold=0.0)
    probs = router.probabilities([r.image for r in rows[:5]])
    assert probs.shape == (5, 3)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
