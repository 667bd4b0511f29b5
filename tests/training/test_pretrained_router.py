"""The router over a frozen pretrained encoder the user has (``hf:PATH``), with models the tests
build themselves (no download): a tiny ViT and a tiny ResNet saved with ``save_pretrained``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmedrag.encoders.image_text import TransformersImageEncoder
from mmedrag.errors import MmedragError


def _tiny_vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_channels=3)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _tiny_resnet(folder: Path) -> Path:
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", num_channels=3)
    ResNetModel(config).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("build", [_tiny_vit, _tiny_resnet])
def test_transformers_encoder_features(build, sample_dir: Path, tmp_path: Path) -> None:
    encoder = TransformersImageEncoder(str(build(tmp_path / "model")))
    images = sorted((sample_dir / "images").glob("*"))[:5]
    x = encoder.encode_images(images)
    assert x.shape == (5, encoder.dim) and np.isfinite(x).all()
    half = encoder.dim // 2
    assert np.allclose(np.linalg.norm(x[:, :half], axis=1), 1, atol=1e-4)
    assert np.allclose(encoder.encode_images(images[:2]), x[:2], atol=1e-5)  # deterministic
    assert encoder.encode_images([]).shape == (0, encoder.dim)
    with pytest.raises(MmedragError, match="image-only"):
        encoder.encode_texts(["x"])


def test_router_over_pretrained_encoder_round_trips(sample_dir: Path, tmp_path: Path) -> None:
    from mmedrag.ingest.labelled import read_rows
    from mmedrag.retrieval.router import DomainRouter
    from mmedrag.training.domain import train_domain

    model = _tiny_vit(tmp_path / "vit")
    report = train_domain([sample_dir / "pairs.jsonl"], tmp_path / "router", field="domain",
                          val_fraction=0.3, features=f"handcrafted+hf:{model}")
    assert report["features"] == f"handcrafted+hf:{model}"
    rows = read_rows(sample_dir / "pairs.jsonl", label_field="domain")
    router = DomainRouter.load(tmp_path / "router", threshold=0.0)
    probs = router.probabilities([r.image for r in rows[:4]])
    assert probs.shape == (4, len(report["labels"])) and np.allclose(probs.sum(1), 1, atol=1e-3)


def test_missing_pretrained_model_is_one_clear_error(tmp_path: Path) -> None:
    from mmedrag.encoders.features import image_features as feature_extractor

    with pytest.raises(MmedragError, match="no such model folder"):
        feature_extractor(f"hf:{tmp_path / 'nothing-here'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MmedragError, match="cannot load image model"):
        feature_extractor(f"hf:{tmp_path / 'empty'}")
