"""``mmedrag prefs build|stats``: RAG-PT preference data (cross-modality and overall alignment)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

prefs_app = typer.Typer(help="Build and inspect RAG-PT preference data (TRL DPO format).",
                        no_args_is_help=True)


def build_command(
    task: str = typer.Option(..., "--task", "-t", help="Harness task or name=PATH "
                             "(vqa-closed=vqa-rad/train.jsonl, bioasq-yesno) or a .jsonl file."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Pipeline config YAML."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder (the retrieval corpus)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the pairs."),
    data_root: Path | None = typer.Option(None, "--data", help="Data root for harness tasks."),
    split: str = typer.Option("all", help="all | train | test (hash split for tasks without one)."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="At most N samples."),
    replace: str = typer.Option("both", help="cm image replacement: noise | unrelated | both."),
    seed: int = typer.Option(0, help="Seeds noise images, unrelated-image choice and the split."),
    max_tokens: int | None = typer.Option(None, help="Generation budget per answer."),
    f1_threshold: float = typer.Option(0.5, help="Open answers: right when token F1 >= this."),
    resume: bool = typer.Option(False, help="Reuse answers an interrupted build left in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Run the pipeline without RAG, with RAG and with replaced images; write cm/oa1/oa2 pairs.

    Example: mmedrag prefs build --task vqa-closed=vqa-rad/train.jsonl --index idx --out prefs
    """
    from mmedrag.errors import UsageError
    from mmedrag.pipeline import build
    from mmedrag.preference.build import PreferenceBuilder
    from mmedrag.preference.judge import Judge
    from mmedrag.preference.samples import load_samples

    kinds = {"noise": ("noise",), "unrelated": ("unrelated",), "both": ("noise", "unrelated")}
    if replace not in kinds:
        raise UsageError(f"--replace must be noise, unrelated or both, got {replace!r}")
    if not (index / "index.json").exists():
        raise UsageError(f"{index}: not an index (no index.json)")
    samples = load_samples(task, data_root, split=split, limit=limit, seed=seed)
    pipeline = build(config, index=index)
    builder = PreferenceBuilder(pipeline, judge=Judge(f1_threshold=f1_threshold),
                                replace=kinds[replace], seed=seed, max_tokens=max_tokens,
                                resume=resume)

    def progress(done: int, total: int) -> None:
        if not as_json and (done % 10 == 0 or done == total):
            typer.echo(f"{done}/{total} samples", err=True)

    result = builder.build(samples, out, progress=progress)
    if as_json:
        typer.echo(json.dumps(result.manifest, indent=1))
        return
    counts = result.counts
    typer.echo(f"{counts['total']} pairs in {out}: cm {counts['cm']}, oa1 {counts['oa1']}, "
               f"oa2 {counts['oa2']} ({result.manifest['duplicates_dropped']} duplicates dropped)")
    for note in result.manifest["notes"]:
        typer.echo(f"note: {note}")


def stats_command(
    data: Path = typer.Argument(..., help="Output folder of `mmedrag prefs build`."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Counts per subset, image-only pairs, and mean completion lengths.

    Example: mmedrag prefs stats prefs/
    """
    from mmedrag.preference.dataset import read_pairs

    pairs = read_pairs(data)
    report = {}
    for subset, rows in sorted(pairs.items()):
        chosen = [len(r["chosen"][0]["content"].split()) for r in rows if r["chosen"]]
        rejected = [len(r["rejected"][0]["content"].split()) for r in rows if r["rejected"]]
        report[subset] = {
            "pairs": len(rows),
            "image_only_difference": sum(r["chosen"] == r["rejected"] for r in rows),
            "samples": len({r.get("sample_id") for r in rows}),
            "chosen_words_mean": round(sum(chosen) / len(chosen), 2) if chosen else None,
            "rejected_words_mean": round(sum(rejected) / len(rejected), 2) if rejected else None}
    manifest = data / "manifest.json" if data.is_dir() else None
    if manifest is not None and manifest.exists():
        report["manifest"] = json.loads(manifest.read_text())
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    for subset, figures in report.items():
        if subset != "manifest":
            typer.echo(f"{subset}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


def register(app: typer.Typer) -> None:
    prefs_app.command("build")(build_command)
    prefs_app.command("stats")(stats_command)
    app.add_typer(prefs_app, name="prefs")
