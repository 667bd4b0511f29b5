"""`mmedrag index / search / info` through the real console command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HASHING = "index:\n  text_encoder: {name: hashing}\n"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mmedrag", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "cfg.yaml").write_text(HASHING)
    out = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(root / "idx"),
              "--config", str(root / "cfg.yaml"), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["added"] == 36 and summary["count"] == 36
    return root / "idx"


def test_indexing_twice_adds_nothing(cli_index: Path, sample_dir: Path) -> None:
    out = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(cli_index), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["added"] == 0 and summary["already_indexed"] == 36 and summary["count"] == 36


def test_search_by_own_image_returns_its_pair_first(cli_index: Path, sample_dir: Path) -> None:
    pairs = [json.loads(line) for line in (sample_dir / "pairs.jsonl").read_text().splitlines()]
    for pair in pairs[::9]:
        out = run("search", "--index", str(cli_index), "--image", str(sample_dir / pair["image"]),
                  "-k", "3", "--json")
        assert out.returncode == 0, out.stderr
        hits = json.loads(out.stdout)["hits"]
        assert hits[0]["id"] == pair["id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
        assert set(hits[0]) >= {"id", "score", "domain", "text", "image"}


def test_text_search_modes_and_filters(cli_index: Path) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        out = run("search", "--index", str(cli_index), "--text", "pneumothorax chest", "-k", "5",
                  "--mode", mode, "--domain", "CHEST", "--json")
        assert out.returncode == 0, out.stderr
        hits = json.loads(out.stdout)["hits"]
        assert 0 < len(hits) <= 5 and all(h["domain"] == "CHEST" for h in hits)


def test_info_json_has_count_and_domains(cli_index: Path) -> None:
    out = run("info", "--index", str(cli_index), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["count"] == 36 and info["domains"] == {"ABD": 12, "CHEST": 12, "HEAD": 12}
    assert info["text_encoder"]["name"] == "hashing" and info["format_version"] == 1
    # the store's ANN kind, parameters, memory estimate and bytes on disk; BM25 coverage
    text = info["stores"]["text"]
    assert text["kind"] == "hnsw" and text["configured_kind"] == "auto" and text["rows"] == 36
    assert text["vector_file_bytes"] == 36 * info["text_encoder"]["dim"] * 4
    assert text["ram_estimate_bytes"] > 0 and text["params"]["m"] == 32
    assert info["bm25"] == {"built_for": 36, "records": 36, "stale": False}
    meta = json.loads((cli_index / "index.json").read_text())
    assert meta["stores"]["text"]["kind"] == "hnsw"
    human = run("info", "--index", str(cli_index))
    assert "text store   : hnsw (m=32" in human.stdout and "MiB on disk" in human.stdout


def test_exit_codes_and_one_line_errors(cli_index: Path, tmp_path: Path) -> None:
    neither = run("search", "--index", str(cli_index))
    assert neither.returncode == 2 and neither.stderr.strip().count("\n") == 0
    assert "give --image PATH, --text TEXT, or both" in neither.stderr
    missing_image = run("search", "--index", str(cli_index), "--text", "x", "--image", "y.png")
    assert missing_image.returncode != 0 and "y.png" in missing_image.stderr
    assert missing_image.stderr.strip().count("\n") == 0
    missing = run("info", "--index", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not an mmedrag index" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{broken\n')
    failed = run("index", str(bad), "--index", str(tmp_path / "i2"), "--on-error", "fail",
                 "--config", str(cli_index.parent / "cfg.yaml"))
    assert failed.returncode == 1 and f"{bad}:2: malformed JSON" in failed.stderr
    assert "Traceback" not in failed.stderr
    unknown = run("index", str(bad), "--index", str(tmp_path / "i3"), "--bogus")
    assert unknown.returncode == 2


def test_opening_with_another_encoder_is_an_error(cli_index: Path, sample_dir: Path,
                                                  tmp_path: Path) -> None:
    cfg = tmp_path / "other.yaml"
    cfg.write_text("index:\n  text_encoder: {name: hashing, options: {dim: 64}}\n")
    out = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(cli_index),
              "--config", str(cfg))
    assert out.returncode == 1 and "was built with text_encoder hashing" in out.stderr


def test_help_has_examples() -> None:
    for command in ("index", "search", "info"):
        out = run(command, "--help")
        assert out.returncode == 0 and "Example:" in out.stdout
