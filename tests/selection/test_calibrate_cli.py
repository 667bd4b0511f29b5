"""`mmedrag calibrate`: reads per-sample results, prints Λ̂ and stores the calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmedrag.cli.main import main
from mmedrag.config import Component, IndexConfig
from mmedrag.index import Index
from mmedrag.registry import REGISTRY
from mmedrag.selection.calibrated import calibrate

ACCURACY = {1: 0.70, 2: 0.80, 3: 0.90, 4: 0.93}


def write_results(path: Path, n: int = 200, seed: int = 3) -> dict[int, list[bool]]:
    rng = np.random.default_rng(seed)
    table = {k: [bool(x) for x in rng.random(n) < a] for k, a in ACCURACY.items()}
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            for k in ACCURACY:
                handle.write(json.dumps({"id": f"q{i}", "k": k, "correct": table[k][i]}) + "\n")
    return table


@pytest.fixture()
def empty_index(tmp_path: Path) -> Path:
    config = IndexConfig(text_encoder=Component(name="hashing"), image_encoder=None)
    Index.open(tmp_path / "idx", create=True, config=config).close()
    return tmp_path / "idx"


def test_calibrate_stores_with_index_and_selector_uses_it(tmp_path: Path, empty_index: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    table = write_results(tmp_path / "cal.jsonl")
    code = main(["calibrate", str(tmp_path / "cal.jsonl"), "--index", str(empty_index),
                 "--alpha", "0.2", "--delta", "0.1", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    expected = calibrate(table, alpha=0.2, delta=0.1)
    assert printed["valid"] == expected.valid and printed["k"] == expected.k
    assert printed["guarantee"] == "P(FR ≤ 0.2) ≥ 0.9"
    stored = Index.open(empty_index).artefacts.calibration
    assert stored["k"] == expected.k and stored["candidates"][0]["n"] == 200
    selector = REGISTRY.create("selector", "calibrated", calibration=stored)
    assert selector.k == expected.k


def test_calibrate_text_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_results(tmp_path / "cal.jsonl")
    assert main(["calibrate", str(tmp_path / "cal.jsonl"), "--alpha", "0.2",
                 "--method", "fixed-sequence", "--order", "4,3,2,1"]) == 0
    out = capsys.readouterr().out
    assert "Λ̂ = {" in out and "fixed-sequence" in out and "P(FR ≤ 0.2) ≥ 0.9" in out


@pytest.mark.parametrize("line,message", [
    ('{"id": "a", "k": 1}', "[correct]"),
    ('{"id": "a", "k": "x", "correct": true}', "[k]"),
    ('{"id": "a", "k": 1, "correct": "maybe"}', "[correct]"),
    ("not json", "not valid JSON"),
])
def test_bad_rows_name_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "b", "k": 1, "correct": true}\n' + line + "\n")
    assert main(["calibrate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2" in err and message in err and "Traceback" not in err


def test_mismatched_ids_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "uneven.jsonl"
    path.write_text('{"id": "a", "k": 1, "correct": true}\n{"id": "b", "k": 1, "correct": true}\n'
                    '{"id": "a", "k": 2, "correct": true}\n')
    assert main(["calibrate", str(path)]) == 1
    assert "same calibration ids" in capsys.readouterr().err
    assert main(["calibrate"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["calibrate", str(path), "--order", "1,x"]) == 2


def test_from_run_reads_runner_calibration_rows_per_task(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """The evaluation runner writes {"id", "task", "k", "correct"}; ids repeat across tasks."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"id": f"q{i}", "task": task, "k": k, "correct": (i + k) % 7 != 0}
            for task in ("vqa-rad", "pubmedqa") for k in (1, 2) for i in range(150)]
    (run / "calibration.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["calibrate", "--from-run", str(run), "--alpha", "0.2", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [c["n"] for c in both["candidates"]] == [300, 300]
    assert main(["calibrate", "--from-run", str(run), "--task", "pubmedqa", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    expected = calibrate({k: [(i + k) % 7 != 0 for i in range(150)] for k in (1, 2)}, 0.1, 0.1)
    assert one["task"] == "pubmedqa" and one["valid"] == expected.valid
    assert [c["errors"] for c in one["candidates"]] == [c.errors for c in expected.candidates]
    assert main(["calibrate", "--from-run", str(tmp_path)]) == 2
    assert "no calibration.jsonl" in capsys.readouterr().err
