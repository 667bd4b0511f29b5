"""``mmedrag ask``: one question against an index (answer, evidence, trace, timings)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from mmedrag.errors import UsageError

TASK_HELP = "closed_vqa | open_vqa | report | mcq | mcq_voc | longform"


def parse_options(items: list[str]) -> dict[str, str] | None:
    """``["A=Pneumonia", "B=Edema"]`` → ``{"A": "Pneumonia", "B": "Edema"}``."""
    if not items:
        return None
    options: dict[str, str] = {}
    for item in items:
        letter, sep, text = item.partition("=")
        letter = letter.strip().upper()
        if not sep or len(letter) != 1 or not letter.isalpha() or not text.strip():
            raise UsageError(f"--option expects LETTER=TEXT (e.g. A=Pneumonia), got {item!r}")
        options[letter] = text.strip()
    return options


def quiet_progress_bars() -> None:
    """No model-loading progress bars on the terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def build_pipeline(index: Path | None, config: Path | None, generator: str | None,
                   k: int | None) -> Any:
    """A Pipeline from CLI options (``--generator`` overrides the config's generator name)."""
    from mmedrag.config import Component, Config
    from mmedrag.pipeline import build

    cfg = Config.from_yaml(config) if config else Config()
    if generator:
        cfg = cfg.model_copy(update={"generator": Component(name=generator)})
    if k is not None:
        if k <= 0:
            raise UsageError("-k must be positive")
        cfg = cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(update={"k": k})})
    if index is not None and not (index / "index.json").exists():
        raise UsageError(f"{index}: not an index folder (no index.json); "
                         "build one with 'mmedrag index'")
    return build(cfg, index=index)


def _snippet(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render_answer(answer: Any, gold: str | None = None) -> str:
    """Human-readable answer: text, parsed answer, evidence, selection, trace and timings."""
    lines = [f"Q: {answer.question}", f"A: {answer.text}"]
    parsed = f"parsed: {answer.parsed}"
    if answer.yes_probability is not None:
        parsed += f"   P(yes)={answer.yes_probability:.2f}"
    if gold is not None:
        parsed += f"   reference: {gold}"
    lines.append(parsed)
    for warning in getattr(answer, "warnings", []):
        lines.append(f"WARNING: {warning}")
    if answer.evidence:
        reason = answer.selection.get("reason", "")
        lines.append(f"evidence (selector: {reason}):" if reason else "evidence:")
        for item in answer.evidence:
            hit = item.hit
            mark = "*" if item.cited else " "
            lines.append(f"  [{item.number}]{mark} {hit.score:.4f} {hit.record.domain or '-':<6} "
                         f"{hit.id}  {_snippet(hit.record.text)}")
    for line in answer.trace:
        lines.append(f"  - {line}")
    order = ["route", "retrieve", "rerank", "select", "generate"]
    stages = [s for s in order if s in answer.seconds] + \
        [s for s in answer.seconds if s not in order and s != "total"]
    timing = ", ".join(f"{s} {answer.seconds[s]:.2f}s" for s in stages)
    lines.append(f"time: {timing}; total {answer.seconds.get('total', 0.0):.2f}s")
    return "\n".join(lines)


def ask_command(
    question: str = typer.Argument(..., help="The question (for --task report: an instruction)."),
    index: Path | None = typer.Option(
        None, "--index", "-i", help="Index folder (needed unless --no-rag)."),
    image: Path | None = typer.Option(
        None, "--image", help="Image the question is about (PNG/JPEG/DICOM)."),
    task: str = typer.Option("open_vqa", "--task", "-t", help=TASK_HELP),
    option: list[str] = typer.Option(
        [], "--option", help="Multiple-choice option LETTER=TEXT (repeatable)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config."),
    generator: str | None = typer.Option(
        None, "--generator", "-g",
        help="Generator name (overrides the config): llama-cpp, openai, transformers, echo."),
    k: int | None = typer.Option(None, "-k", help="Candidates retrieved before selection."),
    no_rag: bool = typer.Option(False, "--no-rag", help="Answer without retrieval."),
    max_tokens: int | None = typer.Option(None, help="Maximum answer tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print the Answer as JSON."),
) -> None:
    """Answer a question (optionally about an image) with retrieved, cited evidence.

    Example: mmedrag ask --index idx --image scan.png --task closed_vqa "Is there a fracture?"
    """
    from mmedrag.generation.prompts import check_task
    from mmedrag.generation.protocol import GenerationParams

    check_task(task)
    quiet_progress_bars()
    if index is None and not no_rag:
        raise UsageError("give --index DIR, or --no-rag to answer without retrieval")
    if image is not None and not image.exists():
        raise UsageError(f"{image}: image not found")
    pipeline = build_pipeline(None if no_rag else index, config, generator, k)
    params = GenerationParams(max_tokens=max_tokens) if max_tokens else None
    answer = pipeline.answer(question, image=image, task=task, options=parse_options(option),
                             use_rag=not no_rag, params=params)
    if as_json:
        typer.echo(answer.to_json())
    else:
        typer.echo(render_answer(answer))


def register(app: typer.Typer) -> None:
    app.command("ask")(ask_command)


__all__ = ["ask_command", "register", "render_answer", "parse_options", "quiet_progress_bars"]
