"""Before/after diagnostics through the evaluation harness (echo generator, packaged sample)."""

from __future__ import annotations

import json
from pathlib import Path

from mmedrag.config import Component, Config
from mmedrag.evaluation.runner import read_rows
from mmedrag.evaluation.tasks import resolve_tasks
from mmedrag.generation.echo import EchoGenerator
from mmedrag.pipeline import Pipeline
from mmedrag.preference.diagnostics import evaluate, write_report


def test_figures_match_the_rows(hashing_index, sample_dir: Path, tmp_path: Path) -> None:
    tasks = resolve_tasks(f"vqa-closed={sample_dir / 'questions.jsonl'}")
    pipeline = Pipeline(Config(generator=Component(name="echo")), hashing_index,
                        generator=EchoGenerator())
    figures = evaluate(pipeline, tasks, tmp_path / "run", limit=12, copy_reference=False)
    task = figures["vqa-closed"]
    rows = read_rows(tmp_path / "run")
    by_variant: dict[str, dict[str, bool]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], {})[row["id"]] = bool(row["correct"])
    no_rag, rag = by_variant["no-rag"], by_variant["rag"]
    assert task["n"] == len(no_rag) == 12
    right = [i for i in no_rag if no_rag[i]]
    assert task["correct_without_rag"] == len(right)
    assert task["over_reliance_count"] == sum(not rag[i] for i in right)
    assert task["accuracy_no_rag"] == sum(no_rag.values()) / 12
    assert task["accuracy_rag"] == sum(rag.values()) / 12

    json_path, md_path = write_report({"base": figures, "tuned": figures}, tmp_path / "report",
                                      {"pairs": {"oa1": 3}})
    payload = json.loads(json_path.read_text())
    assert payload["runs"]["base"]["vqa-closed"]["n"] == 12 and payload["pairs"] == {"oa1": 3}
    text = md_path.read_text()
    assert "| figure | base | tuned |" in text
    assert f"| accuracy_rag | {task['accuracy_rag']:.3f} | {task['accuracy_rag']:.3f} |" in text
