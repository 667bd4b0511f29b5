"""``mmedrag train retriever`` and ``mmedrag eval retrieval`` end to end on the packaged sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.cli.main import main


@pytest.fixture()
def small_index(sample_dir: Path, tmp_path: Path) -> Path:
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    index = Index.open(tmp_path / "idx", create=True,
                       config=IndexConfig(text_encoder=Component(name="hashing")))
    index.add(read_manifest(sample_dir / "pairs.jsonl").records)
    index.close()
    return tmp_path / "idx"


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_eval_retrieval_text_and_image_modes(sample_dir: Path, small_index: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    manifest = str(sample_dir / "pairs.jsonl")
    assert main(["eval", "retrieval", manifest, "--index", str(small_index), "--mode", "text",
                 "--json"]) == 0
    result = _json(capsys)
    # each report finds itself first (identical text, identical hashing vector)
    assert result["queries"] == 36 and result["metrics"]["R@1"] == 1.0
    assert result["metrics"]["MRR"] == 1.0
    assert main(["eval", "retrieval", manifest, "--index", str(small_index), "--mode", "text",
                 "--exclude-self", "--json"]) == 0
    assert _json(capsys)["metrics"]["R@10"] == 0.0  # no other record shares a report
    assert main(["eval", "retrieval", manifest, "--index", str(small_index), "--json"]) == 0
    image = _json(capsys)
    assert image["retriever"] == "dense-image" and image["metrics"]["R@1"] == 1.0
    assert main(["eval", "retrieval", manifest, "--index", str(small_index), "--mode", "x"]) == 2


def test_train_retriever_registers_and_is_used_by_eval(sample_dir: Path, small_index: Path,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    manifest = str(sample_dir / "pairs.jsonl")
    code = main(["train", "retriever", manifest, "--out", str(tmp_path / "tower"), "--index",
                 str(small_index), "--epochs", "1", "--size", "48", "--batch-size", "12",
                 "--aux-fields", "domain", "--domain-field", "domain", "--json"])
    assert code == 0
    summary = _json(capsys)
    assert summary["registered"] == str(small_index) and summary["best_epoch"] == 1
    assert (tmp_path / "tower" / "tower.pt").exists()
    assert main(["eval", "retrieval", manifest, "--index", str(small_index), "--json"]) == 0
    result = _json(capsys)
    assert result["retriever"] == "image-text" and 0 <= result["metrics"]["R@10"] <= 1
    low, high = result["intervals"]["R@10"]
    assert low <= result["metrics"]["R@10"] <= high
    code = main(["train", "retriever", manifest, "--out", str(tmp_path / "t2"), "--domain", "LEG",
                 "--domain-field", "domain"])
    assert code == 2 and "no rows with domain='LEG'" in capsys.readouterr().err


def test_train_retriever_refuses_unknown_extra_features(sample_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "retriever", str(sample_dir / "pairs.jsonl"), "--out",
                 str(tmp_path / "t"), "--extra-features", "handcrafted+sift"])
    assert code == 2 and "unknown image features 'sift'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
