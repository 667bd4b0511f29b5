"""Manifest rows and patient/case-level splits: no group on both sides, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.encoders.pixels import letterbox, preload_images
from mmedrag.errors import InputError, UsageError
from mmedrag.ingest.labelled import Row, read_rows, split_rows


def _rows(n_groups: int, per_group: int) -> list[Row]:
    return [Row(f"{g}_{i}", Path("x.png"), f"t{g}", f"case{g}") for g in range(n_groups)
            for i in range(per_group)]


def test_split_keeps_every_group_on_one_side() -> None:
    rows = _rows(100, 3)
    train, val = split_rows(rows, val_fraction=0.2, seed=3)
    assert len(train) + len(val) == 300
    assert not {r.group for r in train} & {r.group for r in val}
    assert 0.1 < len(val) / 300 < 0.3
    assert split_rows(rows, val_fraction=0.2, seed=3) == (train, val)
    assert split_rows(rows, val_fraction=0.2, seed=4)[1] != val


def test_split_field_uses_the_manifest_split() -> None:
    rows = _rows(4, 1)
    for row, split in zip(rows, ["train", "dev", "train", "test"], strict=True):
        row.fields["split"] = split
    train, val = split_rows(rows, split_field="split")
    assert [r.id for r in train] == ["0_0", "2_0"] and [r.id for r in val] == ["1_0"]
    with pytest.raises(UsageError):
        split_rows(rows, split_field="missing")
    with pytest.raises(UsageError):
        split_rows(rows, val_fraction=1.5)


def test_read_rows_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "image": "a.png", "caption": "c", "modality": "CT",
                                "patient_id": "p1"}) + "\n" +
                    json.dumps({"id": "b", "image": "b.png", "caption": "c"}) + "\n")
    with pytest.raises(InputError, match=r"m.jsonl:2 \[modality\]"):
        read_rows(path, label_field="modality")
    first = read_rows(path)[0]
    assert (first.text, first.group, first.image) == ("c", "p1", tmp_path / "a.png")
    with pytest.raises(UsageError):
        read_rows(tmp_path / "none.jsonl")


def test_letterbox_keeps_aspect_on_black(sample_dir: Path) -> None:
    from PIL import Image

    arr = letterbox(Image.new("L", (100, 50), 200), 32)
    assert arr.shape == (32, 32) and arr[0].max() == 0 and arr[16].min() == 200
    pixels = preload_images(read_rows(sample_dir / "pairs.jsonl")[:3], size=24)
    assert pixels.shape == (3, 24, 24) and pixels.dtype.name == "uint8"


@pytest.mark.data
def test_medpix_and_covid_splits_have_no_leakage(shared_data: Path) -> None:
    medpix = read_rows(shared_data / "medpix" / "pairs.jsonl", label_field="modality")
    train, val = split_rows(medpix, val_fraction=0.2)
    assert not {r.group for r in train} & {r.group for r in val}
    official = split_rows(medpix, split_field="split")
    assert not {r.group for r in official[0]} & {r.group for r in official[1]}
    covid = read_rows(shared_data / "covid-cxr" / "pairs.jsonl", label_field="modality")
    assert {r.group for r in covid} <= {str(r.fields["patient_id"]) for r in covid}
    train, val = split_rows(covid, val_fraction=0.2)
    assert not {r.group for r in train} & {r.group for r in val}
