"""``mmedrag train retriever``: contrastive image→report retriever for one domain (or all)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def retriever_command(
    manifest: Path = typer.Argument(..., help="Image–report manifest (JSONL/CSV)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained retriever and checkpoints."),
    domain: str | None = typer.Option(None, "--domain", "-d", help="Train on this domain's rows only."),
    domain_field: str = typer.Option("domain", help="Field holding the domain (e.g. modality)."),
    text_field: str | None = typer.Option(None, help="Report field (default text/report/caption)."),
    split_field: str | None = typer.Option(None, help="Manifest split field: train rows train, dev rows validate."),
    val_fraction: float = typer.Option(0.1, help="Validation share of cases/patients without --split-field."),
    subset: str | None = typer.Option(None, help="FIELD=VALUE: train on matching rows only (e.g. split=train)."),
    case_text: Path | None = typer.Option(None, help="cases.jsonl with case-level text (findings, diagnosis)."),
    aux_fields: str = typer.Option("modality,plane,location", help="Manifest labels learnt as auxiliary heads."),
    model: str = typer.Option("tower", help="tower (the project's tower, offline default) | hf:ID_OR_PATH (fine-tune a transformers dual encoder: CLIP, SigLIP, PubMedCLIP) | open_clip:ID (fine-tune an open_clip model, e.g. open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224)."),
    pretrained: str | None = typer.Option(None, help="open_clip:ARCH only: pretrained tag or checkpoint file."),
    epochs: int = typer.Option(24, help="Maximum epochs."),
    batch_size: int = typer.Option(64, help="In-batch negatives per step."),
    lr: float | None = typer.Option(None, help="Learning rate (default 2e-3 for the tower, 1e-5 to fine-tune a dual encoder)."),
    monitor: str = typer.Option("R@5", help="Dual encoders: validation figure that picks the best epoch (R@1, R@5, R@10, MRR, nDCG@10)."),
    device: str = typer.Option("cpu", help="Dual encoders: torch device to fine-tune on (cpu, cuda, cuda:1)."),
    size: int = typer.Option(64, help="Image side in pixels (tower)."),
    extra_features: str = typer.Option("handcrafted-small+imagenet", help="Fixed per-image features beside the pixels (tower), named like every image feature: handcrafted-small (468 statistics) | handcrafted | imagenet (frozen EfficientNet-Lite0) | hf:ID | ..., joined with +; 'none' for pixels only."),
    patience: int = typer.Option(8, help="Stop after this many epochs without a better validation recall."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    index: Path | None = typer.Option(None, "--index", "-i", help="Register the retriever with this index."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train image→report retrieval with symmetric InfoNCE (validation split by case/patient).

    Example: mmedrag train retriever medpix/pairs.jsonl --split-field split --domain-field modality --domain CT --out models/ct
    """
    from mmedrag.errors import UsageError

    if index is not None and not (index / "index.json").exists():
        raise UsageError(f"{index}: not an index (no index.json)")
    if subset is not None and "=" not in subset:
        raise UsageError(f"--subset must be FIELD=VALUE, got {subset!r}")
    pair = tuple(subset.split("=", 1)) if subset else None
    dual = model != "tower"
    if dual:
        from mmedrag.encoders.dual import parse_dual_spec

        parse_dual_spec(model)  # a bad --model is refused before any work
        tower_only = {"--case-text": case_text is not None, "--size": size != 64,
                      "--extra-features": extra_features != "handcrafted-small+imagenet",
                      "--aux-fields": aux_fields != "modality,plane,location"}
        given = [name for name, set_ in tower_only.items() if set_]
        if given:
            raise UsageError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
                             "--model tower only")
    else:
        if pretrained is not None:
            raise UsageError("--pretrained applies to --model open_clip:ARCH only")
        if monitor != "R@5" or device != "cpu":
            raise UsageError("--monitor and --device apply to dual encoders (--model hf:... or "
                             "open_clip:...) only")
    opened = None
    if index is not None:
        from mmedrag.index import Index

        opened = Index.open(index)
    if not dual:
        from mmedrag.encoders.features import split_spec
        from mmedrag.training.contrastive import TowerTrainConfig
        from mmedrag.training.retriever import train_retriever

        if extra_features != "none":
            split_spec(extra_features)  # an unknown name is refused before any work

        cfg = TowerTrainConfig(epochs=epochs, batch_size=batch_size,
                               lr=2e-3 if lr is None else lr, size=size,
                               patience=patience, seed=seed,
                               extra_features="" if extra_features == "none" else extra_features)
        summary = train_retriever(
            manifest, out, domain=domain, domain_field=domain_field, text_field=text_field,
            split_field=split_field, val_fraction=val_fraction, subset=pair,  # type: ignore[arg-type]
            aux_fields=tuple(f for f in aux_fields.split(",") if f), case_text=case_text,
            config=cfg, text_encoder=opened.text_encoder if opened else None, resume=resume,
            progress=not as_json)
    else:
        from mmedrag.training.clip_finetune import ClipTrainConfig, finetune_dual

        summary = finetune_dual(
            manifest, out, model, pretrained=pretrained, domain=domain,
            domain_field=domain_field, text_field=text_field, split_field=split_field,
            val_fraction=val_fraction, subset=pair, resume=resume,  # type: ignore[arg-type]
            progress=not as_json, device=device,
            config=ClipTrainConfig(epochs=epochs, batch_size=batch_size,
                                   lr=1e-5 if lr is None else lr, patience=patience, seed=seed,
                                   monitor=monitor))
    if opened is not None:
        if dual:
            from mmedrag.retrieval.image_text import register_dual_tower

            summary["text_store"] = register_dual_tower(opened, out, domain,
                                                        progress=not as_json)
        else:
            from mmedrag.artefacts import TowerArtefact

            tower = TowerArtefact(path=str(out.resolve()), domain=domain)
            opened.set_artefacts(opened.artefacts.with_tower(tower))
        summary["registered"] = str(index)
        opened.close()
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    typer.echo(f"retriever saved to {out} (domain {domain or 'all'}; {summary['train_pairs']} "
               f"train / {summary['val_pairs']} validation pairs; {summary['seconds']} s)")
    val = summary.get("val") or {}
    if summary.get("untrained"):
        typer.echo("untrained: " + "  ".join(f"{k} {v:.3f}"
                                              for k, v in summary["untrained"].items()))
    typer.echo(f"best epoch {summary['best_epoch']}: " +
               "  ".join(f"{k} {v:.3f}" for k, v in val.items()))
    if opened is not None:
        typer.echo(f"registered with {index}")


def register(train_app: typer.Typer) -> None:
    train_app.command("retriever")(retriever_command)
