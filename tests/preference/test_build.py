"""The preference builder end to end on the packaged VQA-RAD sample with the echo generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedrag.config import Component, Config
from mmedrag.generation.echo import EchoGenerator
from mmedrag.pipeline import Pipeline
from mmedrag.preference.build import PreferenceBuilder, noise_image
from mmedrag.preference.judge import Judge
from mmedrag.preference.samples import read_jsonl_samples


def _pipeline(index, sees_images: bool) -> Pipeline:  # noqa: ANN001
    config = Config(generator=Component(name="echo"))
    return Pipeline(config, index, generator=EchoGenerator(sees_images=sees_images))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def built(hashing_index, sample_dir, tmp_path_factory):  # noqa: ANN001, ANN201
    samples = read_jsonl_samples(sample_dir / "questions.jsonl", domain_field="organ")
    out = tmp_path_factory.mktemp("prefs")
    builder = PreferenceBuilder(_pipeline(hashing_index, True), replace=("noise", "unrelated"),
                                seed=3)
    return samples, out, builder.build(samples, out)


def test_files_counts_and_manifest(built) -> None:  # noqa: ANN001
    samples, out, result = built
    for subset in ("cm", "oa1", "oa2"):
        assert len(_lines(out / f"{subset}.jsonl")) == result.counts[subset]
    assert len(_lines(out / "pairs.jsonl")) == result.counts["total"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == result.counts
    assert manifest["seed"] == 3 and manifest["replace"] == ["noise", "unrelated"]
    assert manifest["samples"] == len(samples) == len(_lines(out / "outputs.jsonl"))


def test_rows_follow_the_rules(built) -> None:  # noqa: ANN001
    samples, out, _ = built
    by_id = {s.id: s for s in samples}
    audit = {row["sample_id"]: row for row in _lines(out / "outputs.jsonl")}
    judge = Judge()
    for row in _lines(out / "pairs.jsonl"):
        assert set(row) >= {"prompt", "chosen", "rejected", "images"}
        sample, run = by_id[row["sample_id"]], audit[row["sample_id"]]
        right = {name: judge.is_correct(run[name]["text"], sample.answer, sample.kind,
                                        parsed=run[name]["parsed"]) for name in ("no_rag", "rag")}
        assert row["prompt"] == run["rag"]["messages"]
        if row["subset"] == "oa1":
            assert right == {"no_rag": False, "rag": True}
            assert row["rejected"][0]["content"] == run["no_rag"]["text"]
        elif row["subset"] == "oa2":
            assert right == {"no_rag": True, "rag": False}
        else:
            assert row["chosen"] == row["rejected"]
            assert row["rejected_images"] != row["images"]
        assert (row["chosen"], row["images"]) != (row["rejected"], row.get("rejected_images",
                                                                           row["images"]))


def test_replacement_images(built) -> None:  # noqa: ANN001
    samples, _, _ = built
    cm = [row for row in _lines(built[1] / "cm.jsonl")]
    kinds = {row["meta"]["replacement"] for row in cm}
    assert kinds == {"noise", "unrelated"}
    domain = {s.image: s.domain for s in samples}
    for row in cm:
        replaced = row["rejected_images"][0]
        if row["meta"]["replacement"] == "unrelated":
            assert domain[replaced] != domain[row["images"][0]]
        else:
            pixels = np.asarray(Image.open(replaced), dtype=np.float64) / 255
            # E[clip(N(0,1), 0, 1)] = phi(0) - phi(1) + P(Z > 1) = 0.3156
            assert pixels.mean() == pytest.approx(0.3156, abs=0.01)
            assert (pixels == 0).mean() == pytest.approx(0.5, abs=0.02)


def test_text_only_generator_gives_no_cm(hashing_index, sample_dir, tmp_path) -> None:  # noqa: ANN001
    samples = read_jsonl_samples(sample_dir / "questions.jsonl", domain_field="organ")[:8]
    result = PreferenceBuilder(_pipeline(hashing_index, False)).build(samples, tmp_path)
    assert result.counts["cm"] == 0
    assert any("cm pairs skipped" in note for note in result.manifest["notes"])


def test_noise_is_seeded() -> None:
    a, b = noise_image((16, 8), 1), noise_image((16, 8), 1)
    assert a.size == (16, 8)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(noise_image((16, 8), 2)))


class _Refuses(EchoGenerator):
    def generate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise AssertionError("a resumed build must not generate again")


def test_resume_reuses_the_audit(hashing_index, sample_dir, tmp_path) -> None:  # noqa: ANN001
    samples = read_jsonl_samples(sample_dir / "questions.jsonl", domain_field="organ")[:8]
    first = PreferenceBuilder(_pipeline(hashing_index, True), replace=("noise",)).build(
        samples, tmp_path)
    config = Config(generator=Component(name="echo"))
    again = PreferenceBuilder(Pipeline(config, hashing_index, generator=_Refuses(sees_images=True)),
                              replace=("noise",), resume=True).build(samples, tmp_path)
    assert again.manifest["answers_reused"] == 8
    assert again.counts == first.counts
    assert [p.key() for p in again.pairs] == [p.key() for p in first.pairs]
