"""open_clip fine-tuning and the open_clip encoders on tiny random models.

open_clip needs torchvision, and PyPI's torchvision (a CUDA build) does not load beside the CPU
torch wheel of the main environment; these tests run in CI's second environment (``.venv-clip``:
PyPI's torch + torchvision pair, see ``.ci/run``) with ``-m open_clip``, and skip elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinymodels import TINY_OPEN_CLIP, tiny_open_clip, write_split_sample

from mmedrag.cli.main import main
from mmedrag.errors import MmedragError

pytestmark = pytest.mark.open_clip
open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def split_sample(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_sample(sample_dir, tmp_path_factory.mktemp("split"))


def test_missing_model_is_a_clear_error(sample_dir: Path, tmp_path: Path) -> None:
    from mmedrag.training.clip_finetune import finetune_open_clip

    with pytest.raises(MmedragError, match="cannot load open_clip model 'no-such-model-xyz'"):
        finetune_open_clip(sample_dir / "pairs.jsonl", tmp_path / "x", "no-such-model-xyz",
                           progress=False)


def test_open_clip_encoder_reads_a_local_folder(tmp_path: Path) -> None:
    """The index-time open_clip encoder (``clip:PATH``) on a local-dir model."""
    from PIL import Image

    from mmedrag.encoders.features import image_features

    folder = tiny_open_clip(tmp_path / "oc")
    encoder = image_features(f"clip:local-dir:{folder}")
    vectors = encoder.encode_images([Image.new("RGB", (40, 40), (90, 20, 20))])
    assert vectors.shape == (1, TINY_OPEN_CLIP["embed_dim"])
    assert encoder.encode_texts(["axial ct"]).shape == (1, TINY_OPEN_CLIP["embed_dim"])


def test_tiny_open_clip_finetunes_saves_reloads_and_serves_eval(
        split_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import torch

    from mmedrag.config import Component, IndexConfig
    from mmedrag.encoders.dual import DualEncoder
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    model = tiny_open_clip(tmp_path / "tiny")
    index = Index.open(tmp_path / "idx", create=True,
                       config=IndexConfig(text_encoder=Component(name="hashing")))
    index.add([r for r in read_manifest(split_sample).records if r.meta["split"] == "dev"])
    index.close()
    out = tmp_path / "ft"
    base = ["train", "retriever", str(split_sample), "--model", f"open_clip:local-dir:{model}",
            "--out", str(out), "--split-field", "split", "--batch-size", "8", "--lr", "1e-3",
            "--index", str(tmp_path / "idx"), "--json"]
    assert main([*base, "--epochs", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["library"] == "open_clip"
    assert (first["train_pairs"], first["val_pairs"]) == (24, 12)
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    assert summary["history"][1] == first["history"][1]

    # saved in open_clip's own format: open_clip loads it without mmedrag
    net, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out / 'model'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out / 'model'}")
    encoder = DualEncoder(out)
    with torch.no_grad():
        raw = net.eval().encode_text(tokenizer(["axial ct of the chest"]))
    raw = (raw / raw.norm(dim=-1, keepdim=True)).numpy()
    assert np.allclose(raw, encoder.encode_texts(["axial ct of the chest"]), atol=1e-5)

    code = main(["eval", "retrieval", str(split_sample), "--index", str(tmp_path / "idx"),
                 "--split-field", "split", "--split", "dev", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["retriever"] == "image-text"
    for name, value in summary["val"].items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-3), name
