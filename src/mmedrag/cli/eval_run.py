"""``mmedrag eval run``, ``mmedrag eval report`` and ``mmedrag eval corpus``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mmedrag.errors import UsageError

DEFAULT_DATA = Path("..") / "shared" / "data"


def _list_tasks() -> str:
    from mmedrag.evaluation.tasks import TASKS, groups, task_names

    lines = [f"{name:22s} {TASKS[name].kind:11s} {TASKS[name].description}" for name in task_names()]
    lines.append("groups: " + "; ".join(f"{g} = {', '.join(m)}" for g, m in groups().items()))
    return "\n".join(lines)


def run_command(
    task: str | None = typer.Option(None, "--task", "-t", help="Task or group names, comma-separated; NAME=PATH reads your own file."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Pipeline YAML (default: built-in offline config)."),
    index: Path | None = typer.Option(None, "--index", "-i", help="Index folder to retrieve from (needed unless --no-rag)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (created; an existing one is resumed)."),
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="Folder the built-in tasks' data paths are relative to."),
    no_rag: bool = typer.Option(False, "--no-rag", help="Only the no-retrieval variant."),
    ablation: str | None = typer.Option(None, "--ablation", help="Variants: rag, no-rag, fixed-K, adaptive, calibrated (comma-separated)."),
    calibration_ks: str | None = typer.Option(None, "--calibration-ks", help="Fixed k values to run for RULE calibration, e.g. 1,2,3,5."),
    limit: int | None = typer.Option(None, "--limit", help="First N samples per task (after the seeded shuffle)."),
    seed: int | None = typer.Option(None, "--seed", help="Shuffle samples with this seed before --limit."),
    workers: int = typer.Option(1, "--workers", help="Parallel requests (thread-safe/HTTP generators only)."),
    copy_reference: bool = typer.Option(False, "--copy-reference", help="Also answer closed questions with a noise image (copy-reference rate)."),
    bertscore: Path | None = typer.Option(None, "--bertscore", help="Local Hugging Face model folder: add BERTScore to report/long-form tasks."),
    list_tasks: bool = typer.Option(False, "--list-tasks", help="List tasks and groups, then exit."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html and PNGs at the end."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    """Run pipelines × tasks; resumable, cached, with CIs, cost, time and diagnostics.

    Example: mmedrag eval run --task vqa-rad-closed --index idx --out runs/a --ablation no-rag,rag --limit 50
    """
    if list_tasks:
        typer.echo(_list_tasks())
        return
    if not task:
        raise UsageError("--task is required (see --list-tasks)")
    if out is None:
        raise UsageError("--out is required: the run directory")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be positive, got {limit}")
    from mmedrag.evaluation.runner import Runner
    from mmedrag.evaluation.tasks import resolve_tasks
    from mmedrag.evaluation.variants import parse_variants
    from mmedrag.pipeline import build

    tasks = resolve_tasks(task)
    variants = parse_variants(ablation, no_rag=no_rag, calibration_ks=calibration_ks)
    if index is None and any(v.use_rag for v in variants):
        raise UsageError("--index is required for retrieval variants (or pass --no-rag)")
    if index is not None and not (index / "index.json").exists():
        raise UsageError(f"{index}: not an index folder (no index.json)")
    pipeline = build(config, index=index)
    runner = Runner(pipeline, tasks, out, variants, data_root=data if data.exists() else None,
                    limit=limit, seed=seed, workers=workers, copy_reference=copy_reference,
                    progress=not as_json)
    if workers > 1 and not runner.generator.thread_safe:
        typer.echo(f"note: {runner.generator.name} is not thread-safe; --workers {workers} "
                   "ignored (parallel requests are for HTTP generators)", err=True)
    metrics = runner.run()
    if bertscore is not None:
        if not bertscore.is_dir():
            raise UsageError(f"--bertscore {bertscore}: not a local model folder")
        from mmedrag.evaluation.aggregate import add_bertscore
        from mmedrag.evaluation.runner import read_rows

        metrics = add_bertscore(metrics, read_rows(out), str(bertscore))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str),
                                          encoding="utf-8")
    if report:
        from mmedrag.evaluation.report import write_report

        write_report(out)
    summary = _summary(metrics, out)
    if as_json:
        typer.echo(json.dumps(summary, indent=1, default=str))
        return
    for line in summary["lines"]:
        typer.echo(line)


def _summary(metrics: dict, out: Path) -> dict:
    lines, table = [], {}
    for task, entry in metrics["tasks"].items():
        for variant, s in entry["variants"].items():
            primary = entry["primary"]
            value, ci = s["metrics"].get(primary), s["ci95"].get(primary)
            table.setdefault(task, {})[variant] = {
                "n": s["metrics"].get("n"), primary: value, "ci95": ci,
                "majority_baseline": s["metrics"].get("majority_baseline"),
                "seconds_mean": s["usage"]["seconds_mean"],
                "cost_per_sample_usd": s["usage"]["cost_per_sample_usd"]}
            ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
            value_text = f"{value:.3f}" if isinstance(value, float) else str(value)
            lines.append(f"{task:20s} {variant:12s} n={s['metrics'].get('n'):<5} {primary} "
                         f"{value_text}{ci_text}  {s['usage']['seconds_mean']:.2f} s/sample")
    lines.append(f"run: {json.dumps(metrics.get('run', {}))}  → {out}")
    return {"tasks": table, "run": metrics.get("run", {}), "out": str(out), "lines": lines}


def report_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories written by `mmedrag eval run`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for a combined report of several runs."),
    as_json: bool = typer.Option(False, "--json", help="Print the written paths as JSON."),
) -> None:
    """Write report.html and PNG plots (ablation, Pareto, per-domain) for one or more runs.

    Example: mmedrag eval report runs/vqa-rad runs/pubmedqa --out runs/combined
    """
    from mmedrag.evaluation.report import write_report

    paths = write_report(*run_dirs, out=out)
    if as_json:
        typer.echo(json.dumps({k: str(v) for k, v in paths.items()}))
    else:
        typer.echo(f"wrote {paths['html']}")


def corpus_command(
    name: str = typer.Argument(..., help="vqa-rad (MedPix + VQA-RAD train, leakage-free) or pubmedqa."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder to create or extend."),
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="The shared data folder."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (index section)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Build an evaluation retrieval corpus into an index (test images and overlaps excluded).

    Example: mmedrag eval corpus vqa-rad --index idx/vqarad --data ../shared/data
    """
    from mmedrag.config import Config
    from mmedrag.evaluation.corpora import pubmedqa_corpus, vqa_rad_corpus
    from mmedrag.index import Index

    if name == "vqa-rad":
        records, info = vqa_rad_corpus(data)
    elif name == "pubmedqa":
        records, info = pubmedqa_corpus(data), {}
    else:
        raise UsageError(f"unknown corpus {name!r}; use vqa-rad or pubmedqa")
    cfg = Config.from_yaml(config) if config else Config()
    exists = (index / "index.json").exists()
    idx = Index.open(index, create=True, config=cfg.index if (config or not exists) else None)
    summary = idx.add(records, progress=not as_json)
    idx.close()
    result = {"corpus": name, **info, "ingest": summary.to_dict()}
    typer.echo(json.dumps(result, indent=None if as_json else 1))


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("report")(report_command)
    app.command("corpus")(corpus_command)
