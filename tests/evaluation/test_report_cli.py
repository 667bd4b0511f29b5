"""`mmedrag eval run` / `eval report` end to end with the echo generator and a hashing index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmedrag.cli.main import main


@pytest.fixture()
def echo_config(tmp_path: Path) -> Path:
    path = tmp_path / "echo.yaml"
    path.write_text("generator: {name: echo}\nindex: {text_encoder: {name: hashing}}\n"
                    "prices: {echo: {input_per_1m: 0.5, output_per_1m: 1.5}}\n", encoding="utf-8")
    return path


def test_eval_run_then_report(tmp_path: Path, sample_dir: Path, hashing_index: Any,
                              echo_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["eval", "run", "--task", f"vqa-closed={sample_dir / 'questions.jsonl'}",
                 "--config", str(echo_config), "--index", str(hashing_index.dir),
                 "--out", str(out), "--ablation", "no-rag,fixed-2,adaptive", "--limit", "12",
                 "--seed", "1", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    variants = summary["tasks"]["vqa-closed"]
    assert set(variants) == {"no-rag", "fixed-2", "adaptive"}
    assert all(v["n"] == 12 and 0 <= v["accuracy"] <= 1 for v in variants.values())
    assert variants["fixed-2"]["cost_per_sample_usd"] > 0
    for name in ("report.html", "ablation.png", "pareto.png", "domains.png", "metrics.json",
                 "rows.jsonl", "run.json"):
        assert (out / name).stat().st_size > 0, name
    with Image.open(out / "ablation.png") as image:
        assert image.size[0] > 400
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "over-reliance" in page and "majority" in page and "fixed-2" in page
    assert main(["eval", "report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["html"].endswith("report.html")
    second = tmp_path / "open"
    assert main(["eval", "run", "--task", f"vqa-open={sample_dir / 'questions.jsonl'}",
                 "--config", str(echo_config), "--no-rag", "--out", str(second), "--limit", "4",
                 "--no-report", "--json"]) == 0
    capsys.readouterr()
    assert main(["eval", "report", str(out), str(second)]) == 2  # several runs need --out
    assert main(["eval", "report", str(out), str(second), "--out", str(tmp_path / "both")]) == 0
    both = (tmp_path / "both" / "report.html").read_text(encoding="utf-8")
    assert "vqa-closed" in both and "vqa-open" in both


def test_eval_run_errors_are_one_line(tmp_path: Path, echo_config: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "run", "--task", "vqa-rad-closd", "--out", str(tmp_path / "x"),
                 "--no-rag", "--config", str(echo_config)]) == 2
    assert "did you mean 'vqa-rad-closed'" in capsys.readouterr().err
    assert main(["eval", "run", "--task", "vqa-rad-closed", "--out", str(tmp_path / "x"),
                 "--config", str(echo_config)]) == 2
    assert "--index is required" in capsys.readouterr().err
    assert main(["eval", "run", "--task", "mirage", "--out", str(tmp_path / "x"), "--ablation",
                 "top-3", "--config", str(echo_config)]) == 2
    assert "unknown ablation" in capsys.readouterr().err
    assert main(["eval", "report", str(tmp_path / "nothing")]) == 2
    assert main(["eval", "run", "--list-tasks"]) == 0
    assert "mirage-medqa" in capsys.readouterr().out


def test_eval_corpus_builds_an_index(tmp_path: Path, echo_config: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data" / "pubmedqa"
    folder.mkdir(parents=True)
    (folder / "ori_pqal.json").write_text(json.dumps(
        {"1": {"QUESTION": "Q1?", "CONTEXTS": ["Statins lower LDL."]},
         "2": {"QUESTION": "Q2?", "CONTEXTS": ["Ultrasound finds appendicitis."]}}))
    args = ["eval", "corpus", "pubmedqa", "--index", str(tmp_path / "idx"), "--data",
            str(tmp_path / "data"), "--config", str(echo_config), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["ingest"]["added"] == 2
    assert main(args) == 0  # incremental: nothing new
    assert json.loads(capsys.readouterr().out)["ingest"]["added"] == 0
    assert main(["eval", "corpus", "mimic", "--index", str(tmp_path / "i2")]) == 2
