"""``mmedrag prefs build|stats`` and sample loading through the evaluation harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.cli.main import main
from mmedrag.preference.samples import in_split, load_samples


def test_samples_from_a_harness_task(sample_dir: Path) -> None:
    spec = f"vqa-closed={sample_dir / 'questions.jsonl'}"
    samples = load_samples(spec)
    assert samples and all(s.image for s in samples)
    yes_no = [s for s in samples if s.answer in ("yes", "no")]
    assert yes_no and all(s.task == "closed_vqa" and s.kind == "closed" for s in yes_no)
    others = [s for s in samples if s not in yes_no]  # closed but not yes/no ("Cystic")
    assert others and all(s.task == "open_vqa" and s.kind == "open" for s in others)
    train, test = load_samples(spec, split="train"), load_samples(spec, split="test")
    assert {s.id for s in train} | {s.id for s in test} == {s.id for s in samples}
    assert not {s.id for s in train} & {s.id for s in test}
    assert len(load_samples(spec, limit=3)) == 3


def test_split_rule_is_stable() -> None:
    ids = [f"q{i}" for i in range(2000)]
    test = [i for i in ids if in_split(i, "test")]
    assert 0.26 < len(test) / len(ids) < 0.34
    assert test == [i for i in ids if in_split(i, "test")]
    assert all(in_split(i, "all") for i in ids[:10])


def test_build_and_stats_commands(hashing_index, sample_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("generator:\n  name: echo\n  options:\n    sees_images: true\n"
                      "index:\n  text_encoder:\n    name: hashing\n")
    out = tmp_path / "prefs"
    code = main(["prefs", "build", "--task", f"vqa-closed={sample_dir / 'questions.jsonl'}",
                 "--config", str(config), "--index", str(hashing_index.dir), "--out", str(out),
                 "--replace", "noise", "--limit", "10", "--seed", "1", "--json"])
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["samples"] == 10 and manifest["replace"] == ["noise"]
    assert manifest["counts"]["cm"] == len((out / "cm.jsonl").read_text().splitlines())
    assert main(["prefs", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats.get("cm", {}).get("pairs", 0) == manifest["counts"]["cm"]
    if manifest["counts"]["cm"]:
        assert stats["cm"]["image_only_difference"] == manifest["counts"]["cm"]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prefs", "build", "--task", "vqa-closed", "--index", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--replace", "static"])
    assert code == 2
    assert "--replace must be noise, unrelated or both" in capsys.readouterr().err
    code = main(["train", "dpo", "--data", str(tmp_path / "none"), "--model", "smollm2",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "preference data not found" in err and len(err.splitlines()) == 1
