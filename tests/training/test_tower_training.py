"""The image tower trains on the packaged 36-image sample, saves, loads and resumes identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmedrag.encoders.text import HashingTextEncoder
from mmedrag.encoders.tower import TrainedTowerEncoder, embed_pixels
from mmedrag.errors import IndexMismatchError, UsageError
from mmedrag.ingest.labelled import read_rows, split_rows
from mmedrag.records import Query
from mmedrag.retrieval.image_text import ImageToTextRetriever
from mmedrag.training.contrastive import TowerTrainConfig, train_tower
from mmedrag.training.retriever import build_pair_set, label_maps, train_retriever

CFG = dict(size=48, width=8, batch_size=12, lr=3e-3, epochs=3, patience=10, threads=1)


@pytest.fixture(scope="module")
def sample_sets(sample_dir: Path):  # noqa: ANN201
    rows = read_rows(sample_dir / "pairs.jsonl")
    train, val = split_rows(rows, val_fraction=0.25, seed=0)
    labels = label_maps(train, ("domain",))
    encoder = HashingTextEncoder(64)
    return (build_pair_set(train, encoder, 48, labels), build_pair_set(val, encoder, 48, labels),
            {k: len(v) for k, v in labels.items()})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_training_lowers_the_loss_and_resume_is_identical(sample_sets, tmp_path: Path) -> None:  # noqa: ANN001
    train, val, aux = sample_sets
    cfg = TowerTrainConfig(**CFG)
    straight = train_tower(train, val, tmp_path / "a", cfg, aux, progress=False)
    assert [h["epoch"] for h in straight.history] == [1, 2, 3]
    assert straight.history[-1]["loss"] < straight.history[0]["loss"]
    train_tower(train, val, tmp_path / "b", cfg, aux, progress=False, stop_after=1)
    assert len(_weights(tmp_path / "b" / "last.pt")) > 0
    resumed = train_tower(train, val, tmp_path / "b", cfg, aux, progress=False, resume=True)
    assert resumed.history == straight.history
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_saved_retriever_loads_and_embeds_like_the_trained_model(sample_dir: Path,
                                                                 tmp_path: Path) -> None:
    summary = train_retriever(sample_dir / "pairs.jsonl", tmp_path / "t", aux_fields=("domain",),
                              config=TowerTrainConfig(**{**CFG, "epochs": 2}),
                              text_encoder=HashingTextEncoder(), progress=False)
    assert summary["train_pairs"] + summary["val_pairs"] == 36
    assert set(summary["val"]) >= {"R@1", "R@5", "R@10"}
    encoder = TrainedTowerEncoder(tmp_path / "t")
    assert encoder.dim == 512 and encoder.text_name == "hashing-512"
    images = [sample_dir / "images" / "synpic19605.jpg", sample_dir / "images" / "synpic19853.jpg"]
    vectors = encoder.encode_images(images)
    assert vectors.shape == (2, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = TrainedTowerEncoder(tmp_path / "t").encode_images(images)
    assert np.allclose(vectors, again, atol=1e-6)
    best = torch.load(tmp_path / "t" / "best.pt", weights_only=False)
    encoder.model.load_state_dict(best["model"])
    from mmedrag.encoders.pixels import preload_images
    from mmedrag.encoders.tower import extra_features

    assert encoder.extra_spec == "handcrafted-small+imagenet"
    assert encoder.model.extra_dim == 468 + 1280
    direct = embed_pixels(encoder.model, preload_images(images, encoder.size),
                          extra=extra_features(images, "handcrafted-small+imagenet"))
    assert (tmp_path / "t" / "memory.npz").exists() and encoder.memory_mix == 0.5
    assert not np.allclose(direct, vectors, atol=1e-3)  # blended with the neighbours' reports
    encoder._memory = None
    assert np.allclose(encoder.encode_images(images), direct, atol=1e-6)
    assert encoder.encode_texts(["liver"]).shape == (1, 512)


def test_image_text_retriever_searches_the_text_store(sample_dir: Path, tmp_path: Path,
                                                      hashing_index) -> None:  # noqa: ANN001
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index

    train_retriever(sample_dir / "pairs.jsonl", tmp_path / "t", aux_fields=(),
                    config=TowerTrainConfig(**{**CFG, "epochs": 1}),
                    text_encoder=HashingTextEncoder(), progress=False)
    retriever = ImageToTextRetriever(hashing_index, TrainedTowerEncoder(tmp_path / "t"))
    hits = retriever.retrieve(Query(image=sample_dir / "images" / "synpic19605.jpg"), k=5)
    assert len(hits) == 5 and all(h.retriever == "image-text" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert retriever.retrieve(Query(text="liver"), k=5) == []
    other = Index.open(tmp_path / "other", create=True, config=IndexConfig(
        text_encoder=Component(name="hashing", options={"dim": 128})))
    with pytest.raises(IndexMismatchError):
        ImageToTextRetriever(other, TrainedTowerEncoder(tmp_path / "t"))
    with pytest.raises(UsageError):
        TrainedTowerEncoder(tmp_path / "missing")


def test_extra_feature_specs_and_older_towers() -> None:
    from mmedrag.encoders.tower import extra_features, saved_extra_spec

    with pytest.raises(UsageError, match="unknown image features 'sift'"):
        extra_features([], "handcrafted+sift")
    # towers saved before the spec existed took the 468 hand-crafted values, which the one
    # image-feature namespace now calls "handcrafted-small"
    assert saved_extra_spec({"tower": {"extra_dim": 468}, "train": {"handcrafted": True}}) \
        == "handcrafted-small"
    assert saved_extra_spec({"tower": {"extra_dim": 0}, "train": {}}) == ""
    assert saved_extra_spec({"tower": {"extra_dim": 1748},
                             "train": {"extra_features": "handcrafted+imagenet"}}) \
        == "handcrafted-small+imagenet"
    assert saved_extra_spec({"tower": {"extra_dim": 1837}, "feature_names": 2,
                             "train": {"extra_features": "handcrafted+imagenet"}}) \
        == "handcrafted+imagenet"
