"""Before/after RAG-PT diagnostics through the evaluation harness, in one report.

:func:`evaluate` runs the harness (:class:`mmedrag.evaluation.runner.Runner`) with the variants
``no-rag`` and ``rag`` (and the noise-image copy-reference probe for closed questions) and
:func:`alignment_figures` reads from its ``metrics.json``: accuracy without and with RAG,
over-reliance (right without RAG → wrong with RAG, over the right-without-RAG count), rescue,
and copy-reference rate — the harness's own definitions (``evaluation/diagnostics.py``).
:func:`write_report` puts base and tuned side by side as JSON and Markdown.

Example:
    >>> before = evaluate(base_pipeline, tasks, "runs/before", data_root="data")  # doctest: +SKIP
    >>> after = evaluate(tuned_pipeline, tasks, "runs/after", data_root="data")   # doctest: +SKIP
    >>> write_report({"base": before, "tuned": after}, "runs/report")             # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIGURES = ("accuracy_no_rag", "accuracy_rag", "over_reliance", "rescue", "copy_reference_rate",
           "n")


def evaluate(pipeline: Any, tasks: list[Any], out: str | Path, data_root: str | Path | None = None,
             limit: int | None = None, copy_reference: bool = True) -> dict[str, Any]:
    """Run the harness (no-rag, rag) and return :func:`alignment_figures` per task."""
    from mmedrag.evaluation.runner import Runner
    from mmedrag.evaluation.variants import parse_variants

    runner = Runner(pipeline, tasks, out, parse_variants("no-rag,rag"), data_root=data_root,
                    limit=limit, copy_reference=copy_reference, progress=False)
    metrics = runner.run()
    return {name: alignment_figures(entry) for name, entry in metrics["tasks"].items()}


def alignment_figures(task_metrics: dict[str, Any]) -> dict[str, Any]:
    """The RAG-PT figures of one task entry of the harness's ``metrics.json``."""
    variants = task_metrics.get("variants", {})
    primary = task_metrics.get("primary", "accuracy")

    def metric(variant: str) -> float | None:
        return variants.get(variant, {}).get("metrics", {}).get(primary)

    reliance = task_metrics.get("over_reliance", {}).get("rag", {})
    copy = variants.get("rag", {}).get("copy_reference") or {}
    return {"primary": primary, "accuracy_no_rag": metric("no-rag"), "accuracy_rag": metric("rag"),
            "over_reliance": reliance.get("over_reliance"),
            "over_reliance_count": reliance.get("over_reliance_count"),
            "correct_without_rag": reliance.get("correct_without_rag"),
            "rescue": reliance.get("rescue"), "rescue_count": reliance.get("rescue_count"),
            "wrong_without_rag": reliance.get("wrong_without_rag"),
            "copy_reference_rate": copy.get("copy_reference_rate"),
            "copy_reference_image_seen": copy.get("image_seen"),
            "n": reliance.get("paired")}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_report(runs: dict[str, dict[str, Any]], out: str | Path,
                 extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """``report.json`` and ``report.md``: one table per task, one column per run (base, tuned)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"runs": runs, **(extra or {})}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    lines = ["# RAG-PT diagnostics", ""]
    tasks = sorted({task for figures in runs.values() for task in figures})
    names = list(runs)
    for task in tasks:
        lines += [f"## {task}", "", "| figure | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for figure in FIGURES:
            cells = [_fmt(runs[name].get(task, {}).get(figure)) for name in names]
            lines.append(f"| {figure} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Over-reliance: right without RAG but wrong with RAG, over the right-without-RAG "
              "count. Copy-reference: still right with the image replaced by noise "
              "(meaningful only for generators that see images).", ""]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {json.dumps(value, default=str)}")
    md_path = out / "report.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path
