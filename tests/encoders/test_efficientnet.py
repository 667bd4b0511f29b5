"""The packaged ImageNet EfficientNet-Lite0: the port reproduces ImageNet classes, features are
mirror-invariant and normalised, bad weights are one clear error, and the router uses them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedrag.encoders.efficientnet import ImageNetFeatures
from mmedrag.errors import MmedragError
from mmedrag.registry import REGISTRY

DAISY = 985
# ImageNet classes a photograph of a Chinese temple may rightly be: bell cote, boathouse,
# church, dome, mosque, monastery, palace, pagoda-like stupa, castle.
TEMPLE = {442, 449, 483, 497, 538, 668, 663, 698, 832}


@pytest.fixture(scope="module")
def encoder() -> ImageNetFeatures:
    return ImageNetFeatures()


def _sample(name: str) -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


def test_port_reproduces_imagenet_classes(encoder: ImageNetFeatures) -> None:
    """A wrong layer order, padding or input scaling would not find the daisy at rank 1."""
    flower, temple = encoder.classify([_sample("flower.jpg"), _sample("china.jpg")])
    assert flower[0][0] == DAISY
    assert {index for index, _ in temple} & TEMPLE
    assert temple[0][0] in TEMPLE
    assert all(p1 >= p2 for (_, p1), (_, p2) in zip(flower, flower[1:], strict=False))


def test_features_are_normalised_and_mirror_invariant(encoder: ImageNetFeatures,
                                                      sample_dir: Path) -> None:
    path = next((sample_dir / "images").glob("*.jpg"))
    image = Image.open(path)
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    other = next(p for p in sorted((sample_dir / "images").glob("*.jpg")) if p != path)
    vectors = encoder.encode_images([path, mirrored, other])
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    assert float(vectors[0] @ vectors[2]) < 0.999
    assert encoder.encode_images([]).shape == (0, 1280)


def test_bad_weights_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MmedragError, match="no such EfficientNet-Lite0 weights file"):
        ImageNetFeatures(tmp_path / "missing.pth")
    torn = tmp_path / "torn.pth"
    torn.write_bytes(b"not a checkpoint")
    with pytest.raises(MmedragError, match="torn.pth: not EfficientNet-Lite0 weights"):
        ImageNetFeatures(torn)


def test_registered_and_named_by_feature_specs() -> None:
    from mmedrag.encoders.features import image_features as feature_extractor
    from mmedrag.retrieval.router import DEFAULT_FEATURES

    assert REGISTRY.get("image_encoder", "imagenet") is ImageNetFeatures
    features = feature_extractor(DEFAULT_FEATURES)
    assert features.name == "handcrafted+imagenet" and features.dim == 557 + 1280


def test_index_with_imagenet_image_encoder_finds_each_image_first(sample_dir: Path,
                                                                  tmp_path: Path) -> None:
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    config = IndexConfig(text_encoder=Component(name="hashing"),
                         image_encoder=Component(name="imagenet"))
    index = Index.open(tmp_path / "idx", create=True, config=config)
    records = read_manifest(sample_dir / "pairs.jsonl").records[:8]
    index.add(records)
    index.close()
    reopened = Index.open(tmp_path / "idx")
    assert reopened.meta["image_encoder"]["dim"] == 1280
    queries = reopened.image_encoder.encode_images([r.image for r in records])
    for record, hits in zip(records, reopened.image_store.search(queries, k=3), strict=True):
        assert hits[0].id == record.id and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_files_and_bytes_are_encoded_once(encoder: ImageNetFeatures, sample_dir: Path,
                                          tmp_path: Path) -> None:
    from mmedrag.encoders import efficientnet

    path = tmp_path / "scan.jpg"
    path.write_bytes(next((sample_dir / "images").glob("*.jpg")).read_bytes())
    calls: list[int] = []
    original = encoder.encode_pixels
    def counting(pixels: np.ndarray) -> np.ndarray:
        calls.append(len(pixels))
        return original(pixels)

    encoder.encode_pixels = counting  # type: ignore[method-assign]
    try:
        first = encoder.encode_images([path, path.read_bytes()])
        again = encoder.encode_images([path, path.read_bytes(), Image.open(path)])
    finally:
        del encoder.encode_pixels
    assert calls == [2, 1]  # the PIL image has no content key; the file and bytes were cached
    np.testing.assert_allclose(again[:2], first, atol=0)
    np.testing.assert_allclose(again[2], first[0], atol=1e-5)
    path.write_bytes(next(p for p in sorted((sample_dir / "images").glob("*.jpg"))
                          if p.read_bytes() != path.read_bytes()).read_bytes())
    os.utime(path, ns=(1, 1))  # a rewritten file has a new key
    assert efficientnet._cache_key(encoder.weights, path) not in efficientnet._CACHE
