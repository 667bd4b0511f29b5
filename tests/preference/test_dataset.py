"""Reading preference files back as TRL rows for text-only and vision-language models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.errors import InputError, UsageError
from mmedrag.preference.dataset import read_pairs, trl_rows


def _row(subset: str, chosen: str, rejected: str, **extra) -> dict:  # noqa: ANN003
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "images": ["a.png"],
            "subset": subset, **extra}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rows = {"cm": [_row("cm", "yes", "yes", rejected_images=["images/n.png"])],
            "oa1": [_row("oa1", "yes", "no"), _row("oa1", "no", "yes")],
            "oa2": [_row("oa2", "no", "Yes, it is.")]}
    for subset, items in rows.items():
        (tmp_path / f"{subset}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return tmp_path


def test_text_only_rows_drop_images_and_cm(folder: Path) -> None:
    rows, skipped = trl_rows(read_pairs(folder), ("cm", "oa1", "oa2"), vision=False)
    assert len(rows) == 3 and skipped == {"image-only difference (text-only model)": 1}
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q?"}]
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)


def test_vision_rows_resolve_paths_with_uniform_columns(folder: Path) -> None:
    rows, skipped = trl_rows(read_pairs(folder), ("cm", "oa1"), vision=True, base=folder)
    assert skipped == {} and len(rows) == 3
    assert rows[0]["images"] == [str(folder / "a.png")]
    assert rows[0]["rejected_images"] == [str(folder / "images" / "n.png")]
    assert rows[1]["rejected_images"] is None
    assert len({tuple(sorted(r)) for r in rows}) == 1


def test_combined_file_and_errors(folder: Path, tmp_path: Path) -> None:
    combined = tmp_path / "all.jsonl"
    combined.write_text("".join((folder / f"{s}.jsonl").read_text() for s in ("cm", "oa1")))
    assert {k: len(v) for k, v in read_pairs(combined).items()} == {"cm": 1, "oa1": 2}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": [], "chosen": []}) + "\n")
    with pytest.raises(InputError, match="rejected"):
        read_pairs(bad)
    with pytest.raises(UsageError, match="not found"):
        read_pairs(tmp_path / "missing")
