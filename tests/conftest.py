"""Shared fixtures: the packaged VQA-RAD sample, small real indexes, and ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "src" / "mmedrag" / "data" / "vqarad_sample"


def _shared_data() -> Path | None:
    for candidate in (os.environ.get("MMEDRAG_SHARED_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test cleanly when it is absent."""
    path = _shared_data()
    if path is None:
        pytest.skip("../shared/data is not available")
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["MMEDRAG_CACHE"] = str(tmp_path_factory.mktemp("mmedrag-cache"))


def _build_index(directory: Path, text_encoder: str):  # noqa: ANN202
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    cfg = IndexConfig(text_encoder=Component(name=text_encoder))
    index = Index.open(directory, create=True, config=cfg)
    read = read_manifest(SAMPLE / "pairs.jsonl")
    index.add(read.records)
    return index


@pytest.fixture(scope="session")
def hashing_index(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The 36-pair sample indexed with the weight-free hashing text encoder (fast)."""
    return _build_index(tmp_path_factory.mktemp("hashing-index"), "hashing")


@pytest.fixture(scope="session")
def minilm_index(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The 36-pair sample indexed with the offline all-MiniLM-L6-v2 (the default encoder)."""
    return _build_index(tmp_path_factory.mktemp("minilm-index"), "sentence-transformers")
