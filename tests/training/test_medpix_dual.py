"""MedPix train → dev with a tiny random CLIP-family model (benchmarks/finetune_dual.py): the
fine-tuned model reloads in its own library with the same dev figures, and ``eval retrieval``
through the index (its registered dual tower and text store) gives the same figures again.
Slow (minutes of CPU) and needs ../shared/data; the open_clip one runs in CI's ``.venv-clip``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(shared_data: Path, library: str, out: Path) -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from finetune_dual import run
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return run(shared_data, library, epochs=3, out=out)


def _check(result: dict) -> None:
    assert (result["train_pairs"], result["val_pairs"]) == (1653, 197)
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2, 3]
    losses = [h["loss"] for h in result["history"][1:]]
    assert losses[-1] < losses[0]  # the training pairs are being fitted
    assert result["eval_retriever"] == "image-text" and result["eval_queries"] == 197
    for name, value in result["val"].items():
        # reloaded by its own library, without mmedrag's loader: the same dev figures
        assert result["reloaded"][name] == pytest.approx(value, abs=1e-3), name
        # eval retrieval through the index, its dual tower and text store: the same again
        assert result["eval_retrieval"][name] == pytest.approx(value, abs=1e-3), name


@pytest.mark.slow
@pytest.mark.data
def test_medpix_tiny_transformers_clip(shared_data: Path, tmp_path: Path) -> None:
    result = _run(shared_data, "transformers", tmp_path)
    assert result["reloaded"]["class"] == "CLIPModel"
    _check(result)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.open_clip
@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                    reason="needs open_clip (CI's .venv-clip)")
def test_medpix_tiny_open_clip(shared_data: Path, tmp_path: Path) -> None:
    result = _run(shared_data, "open_clip", tmp_path)
    assert result["reloaded"]["class"] == "CLIP"
    _check(result)
