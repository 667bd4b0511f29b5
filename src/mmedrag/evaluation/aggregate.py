"""From per-sample rows to metrics: CIs, per-domain breakdown, cost and time, diagnostics.

Dollars come from the config's price table, ``prices: {model: {input_per_1m, output_per_1m}}``
(a ``default`` entry applies to models not listed; models without a price cost 0 and are
listed under ``unpriced_models``). Seconds are wall seconds per sample as the pipeline measured
them (a cached generation counts the seconds it originally took).

Example:
    >>> cost_of({"model": "m", "tokens_in": 1000, "tokens_out": 10},
    ...         {"m": {"input_per_1m": 1.0, "output_per_1m": 2.0}})
    0.00102
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmedrag.evaluation.diagnostics import copy_reference, evidence_support, over_reliance
from mmedrag.evaluation.metrics import bootstrap_ci
from mmedrag.evaluation.tasks import TaskSpec, get_task

_SLOW_KINDS = ("report", "longform")


def cost_of(row: dict[str, Any], prices: dict[str, dict[str, float]]) -> float | None:
    """Dollars for one row, or None when its model has no price."""
    table = prices.get(str(row.get("model", ""))) or prices.get("default")
    if not table:
        return None
    return (row.get("tokens_in", 0) * float(table.get("input_per_1m", 0.0))
            + row.get("tokens_out", 0) * float(table.get("output_per_1m", 0.0))) / 1e6


def _usage(rows: Sequence[dict[str, Any]], prices: dict[str, dict[str, float]]) -> dict[str, Any]:
    seconds = [float(r.get("seconds", {}).get("total", 0.0)) for r in rows]
    costs = [cost_of(r, prices) for r in rows]
    priced = [c for c in costs if c is not None]
    return {"tokens_in_mean": statistics.fmean(r.get("tokens_in", 0) for r in rows),
            "tokens_out_mean": statistics.fmean(r.get("tokens_out", 0) for r in rows),
            "tokens_in_total": sum(r.get("tokens_in", 0) for r in rows),
            "tokens_out_total": sum(r.get("tokens_out", 0) for r in rows),
            "seconds_mean": statistics.fmean(seconds), "seconds_median": statistics.median(seconds),
            "seconds_total": sum(seconds),
            "cost_total_usd": sum(priced), "cost_per_sample_usd": sum(priced) / len(rows),
            "unpriced_models": sorted({str(r.get("model"))
                                       for r, c in zip(rows, costs, strict=True) if c is None}),
            "cache_hits": sum(bool(r.get("cache_hit")) for r in rows),
            "selected_k_mean": statistics.fmean(r["selection_k"] for r in rows
                                                if r.get("selection_k") is not None)
            if any(r.get("selection_k") is not None for r in rows) else None}


def summarize(task: TaskSpec, rows: Sequence[dict[str, Any]], prices: dict[str, dict[str, float]],
              resamples: int | None = None) -> dict[str, Any]:
    """Metrics with 95 % bootstrap CIs, per-domain metrics, usage and evidence support."""
    stats = [r["stats"] for r in rows]
    metrics = task.aggregate(stats)
    n_boot = resamples or (200 if task.kind in _SLOW_KINDS else 1000)
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_domain[r.get("domain") or "-"].append(r["stats"])
    return {"metrics": metrics, "ci95": bootstrap_ci(stats, task.aggregate, resamples=n_boot),
            "primary": task.primary,
            "per_domain": {d: {"n": len(s), task.primary: task.aggregate(s).get(task.primary)}
                           for d, s in sorted(by_domain.items())},
            "usage": _usage(rows, prices), "evidence": evidence_support(rows),
            "copy_reference": copy_reference(rows)}


def paired_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the samples every variant of their task has answered (for like-for-like tables)."""
    ids: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        ids[row["task"]][row["variant"]].add(row["id"])
    common = {task: set.intersection(*variants.values()) for task, variants in ids.items()}
    return [r for r in rows if r["id"] in common[r["task"]]]


def aggregate_run(rows: Sequence[dict[str, Any]], tasks: Sequence[TaskSpec] | None = None,
                  prices: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Everything ``metrics.json`` holds, keyed task → variant, plus paired diagnostics."""
    prices = prices or {}
    specs = {t.name: t for t in tasks or []}
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["task"]][row["variant"]].append(row)
    out: dict[str, Any] = {"tasks": {}, "prices": prices}
    for task_name, variants in grouped.items():
        task = specs.get(task_name) or get_task(task_name.partition(":")[0])
        entry: dict[str, Any] = {"kind": task.kind, "primary": task.primary, "variants": {}}
        for variant, vrows in variants.items():
            entry["variants"][variant] = summarize(task, vrows, prices)
        if "no-rag" in variants:
            entry["over_reliance"] = {v: over_reliance(variants["no-rag"], vr)
                                      for v, vr in variants.items() if v != "no-rag"}
        out["tasks"][task_name] = entry
    return out


def write_calibration(rows: Sequence[dict[str, Any]], path: str | Path) -> int:
    """RULE calibration input: ``{"id", "task", "k", "correct"}`` per fixed-k row."""
    chosen = [r for r in rows if r.get("fixed_k") is not None and r.get("correct") is not None]
    if not chosen:
        return 0
    with open(path, "w", encoding="utf-8") as handle:
        for r in chosen:
            handle.write(json.dumps({"id": r["id"], "task": r["task"], "k": r["fixed_k"],
                                     "correct": bool(r["correct"])}) + "\n")
    return len(chosen)


def add_bertscore(metrics: dict[str, Any], rows: Sequence[dict[str, Any]], model_path: str
                  ) -> dict[str, Any]:
    """Add BERTScore (greedy matching, first reference) to every report/longform variant."""
    from mmedrag.evaluation.textmetrics import bert_score

    for task_name, entry in metrics["tasks"].items():
        if entry["kind"] not in _SLOW_KINDS:
            continue
        for variant, summary in entry["variants"].items():
            mine = [r for r in rows if r["task"] == task_name and r["variant"] == variant]
            refs = [r["reference"][0] if isinstance(r["reference"], list) else r["reference"]
                    for r in mine]
            summary["metrics"].update(bert_score([r.get("raw") or "" for r in mine], refs,
                                                 model_path))
    return metrics
