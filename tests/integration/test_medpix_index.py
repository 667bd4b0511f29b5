"""Whole ingest → encode → store → search path on the shared MedPix pairs (default encoders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.data]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmedrag", *args], capture_output=True,
                          text=True, timeout=3000, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_medpix_own_image_is_rank_one_and_reindex_adds_nothing(shared_data: Path,
                                                               tmp_path: Path) -> None:
    manifest = shared_data / "medpix" / "pairs.jsonl"
    index = tmp_path / "medpix"
    args = ("index", str(manifest), "--index", str(index), "--text-field", "caption",
            "--domain-field", "modality", "--json")
    first = run(*args)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["added"] == 1850 and summary["count"] == 1850 and summary["skipped"] == 0
    assert summary["by_domain"] == {"CT": 962, "MR": 888}
    second = run(*args)
    assert json.loads(second.stdout)["count"] == 1850 and json.loads(second.stdout)["added"] == 0

    pairs = [json.loads(line) for line in manifest.read_text().splitlines()]
    for pair in pairs[::185]:
        out = run("search", "--index", str(index), "--image",
                  str(manifest.parent / pair["image"]), "-k", "5", "--json")
        assert out.returncode == 0, out.stderr
        hits = json.loads(out.stdout)["hits"]
        assert hits[0]["id"] == pair["id"], (pair["id"], hits[:2])
        assert hits[0]["text"] == pair["caption"].strip()
    text = run("search", "--index", str(index), "--text", pairs[7]["caption"], "--mode", "dense",
               "-k", "3", "--where", "split=" + pairs[7]["split"], "--json")
    hits = json.loads(text.stdout)["hits"]
    assert any(h["text"] == pairs[7]["caption"].strip() for h in hits)
