"""open_clip fine-tuning on a tiny randomly initialised model (skipped without open-clip-torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.errors import MmedragError

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_missing_model_is_a_clear_error(sample_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from mmedrag.training.clip_finetune import finetune_open_clip

    with pytest.raises(MmedragError, match="cannot load open_clip model"):
        finetune_open_clip(sample_dir / "pairs.jsonl", tmp_path / "x", "no-such-model-xyz",
                           progress=False)


def test_tiny_open_clip_trains_checkpoints_and_resumes(sample_dir: Path, tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    from mmedrag.training.clip_finetune import ClipTrainConfig, finetune_open_clip

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "mmedrag-tiny.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(config_dir)
    cfg = ClipTrainConfig(epochs=1, batch_size=12, lr=1e-3)
    summary = finetune_open_clip(sample_dir / "pairs.jsonl", tmp_path / "clip", "mmedrag-tiny",
                                 config=cfg, progress=False)
    assert summary["best_epoch"] == 1 and (tmp_path / "clip" / "last.pt").exists()
    assert set(summary["val"]) >= {"R@1", "R@5", "R@10"}
    cfg.epochs = 2
    resumed = finetune_open_clip(sample_dir / "pairs.jsonl", tmp_path / "clip", "mmedrag-tiny",
                                 config=cfg, resume=True, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
