"""``mmedrag train domain``: fit the domain router (calibrated linear probe over image features)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def format_confusion(columns: list[str], labels: list[str], matrix: list[list[int]]) -> str:
    """Confusion matrix as aligned text (rows: truth, columns: prediction)."""
    corner = "truth \\ pred"
    first = max(len(corner), *(len(label) for label in labels)) + 2
    width = max(7, *(len(c) + 2 for c in columns))
    lines = [corner.ljust(first) + "".join(c.rjust(width) for c in columns)]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(label.ljust(first) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def domain_command(
    manifest: list[Path] = typer.Argument(..., help="Labelled JSONL/CSV manifests (images relative to each)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the router in."),
    field: str = typer.Option("domain", "--field", help="Label field: domain, modality, organ, ..."),
    split_field: str | None = typer.Option(None, help="Use the manifest's own split field (train/dev)."),
    val_fraction: float = typer.Option(0.2, help="Held-out share of cases/patients without --split-field."),
    features: str = typer.Option("handcrafted+imagenet", help="handcrafted (statistics, seconds) | imagenet[:PATH] (EfficientNet-Lite0 trained on ImageNet, shipped offline) | thumbnail | cnn (a CNN trained here, ~5 min) | tower:PATH | hf:ID_OR_PATH | clip:ID_OR_PATH, joined with +; the default handcrafted+imagenet is the most accurate measured"),
    threshold: float = typer.Option(0.5, help="Below this top probability the router searches all domains."),
    seed: int = typer.Option(0, help="Split and model seed."),
    cnn_epochs: int = typer.Option(30, min=1, help="Training epochs of the cnn features."),
    index: Path | None = typer.Option(None, "--index", "-i", help="Register the router with this index."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train a domain classifier over image embeddings, split by case/patient id.

    Example: mmedrag train domain medpix/pairs.jsonl --field modality --split-field split --out models/domain
    """
    from mmedrag.errors import UsageError
    from mmedrag.training.domain import train_domain

    if index is not None and not (index / "index.json").exists():
        raise UsageError(f"{index}: not an index (no index.json)")
    report = train_domain(manifest, out, field=field, split_field=split_field,
                          val_fraction=val_fraction, features=features, threshold=threshold,
                          seed=seed, progress=not as_json, cnn_epochs=cnn_epochs)
    if index is not None:
        from mmedrag.index import Index

        opened = Index.open(index)
        from mmedrag.artefacts import RouterArtefact

        router = RouterArtefact(path=str(out.resolve()))  # the threshold saved with it applies
        opened.set_artefacts(opened.artefacts.model_copy(update={"router": router}))
        report["registered"] = str(index)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    typer.echo(f"router saved to {out} ({field}: {', '.join(report['labels'])})")
    typer.echo(f"train {report['train']} images / {report['train_groups']} cases; held out "
               f"{report['validation']} images / {report['validation_groups']} cases")
    typer.echo(f"accuracy {report['accuracy']:.3f} (top-1 {report['accuracy_top1']:.3f}, "
               f"{report['fallback']} routed to all domains at threshold {threshold})")
    typer.echo(format_confusion(report["columns"], report["labels"], report["confusion"]))
    if index is not None:
        typer.echo(f"registered with {index}")


def register(train_app: typer.Typer) -> None:
    train_app.command("domain")(domain_command)
