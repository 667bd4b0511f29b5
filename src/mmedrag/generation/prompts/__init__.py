"""Versioned prompt templates (``prompts/<version>.yaml``) and the message builder.

Every task has an instruction with and without evidence; evidence is numbered [1]..[n] so that
answers can cite it. The template version is recorded in each answer's trace.

Example:
    >>> from mmedrag.records import Hit, Record
    >>> hits = [Hit(record=Record(id="r1", text="Large right pleural effusion."), score=1.0)]
    >>> messages = build_messages("closed_vqa", "Is there an effusion?", hits)
    >>> "[1] Large right pleural effusion." in messages[-1]["content"]
    True
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from mmedrag.errors import UsageError
from mmedrag.records import Hit

TASKS = ("closed_vqa", "open_vqa", "report", "mcq", "mcq_voc", "longform")
MAX_EVIDENCE_CHARS = 1200
_PACKAGE = "mmedrag.generation.prompts"


def available_versions() -> list[str]:
    """Prompt versions shipped with the package (file stems of ``prompts/*.yaml``)."""
    folder = resources.files(_PACKAGE)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


@lru_cache(maxsize=8)
def load_templates(version: str = "v1") -> dict[str, Any]:
    """The template set ``version`` (UsageError naming the known versions when missing)."""
    path = resources.files(_PACKAGE) / f"{version}.yaml"
    if not path.is_file():
        known = ", ".join(available_versions())
        raise UsageError(f"unknown prompt_version {version!r} (known: {known})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = [task for task in TASKS if task not in data.get("tasks", {})]
    if missing:
        raise UsageError(f"prompts/{version}.yaml: tasks missing: {', '.join(missing)}")
    return data


def check_task(task: str) -> None:
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r} (known: {', '.join(TASKS)})")


def format_evidence(hits: list[Hit], header: str, max_chars: int = MAX_EVIDENCE_CHARS) -> str:
    """Evidence block: one ``[n] text`` line per hit (long texts cut at ``max_chars``)."""
    if not hits:
        return ""
    lines = [header]
    for number, hit in enumerate(hits, start=1):
        text = " ".join(hit.record.text.split())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " ..."
        title = f"{hit.record.title}: " if hit.record.title else ""
        lines.append(f"[{number}] {title}{text}")
    return "\n".join(lines) + "\n"


def format_options(options: dict[str, str] | None) -> str:
    if not options:
        return ""
    return "Options:\n" + "\n".join(f"{k}. {v}" for k, v in options.items())


def build_messages(task: str, question: str, evidence: list[Hit],
                   options: dict[str, str] | None = None,
                   image: str = "none", version: str = "v1",
                   evidence_chars: int = MAX_EVIDENCE_CHARS) -> list[dict[str, Any]]:
    """Chat messages (system + user) for ``task``.

    Args:
        task: one of ``TASKS``.
        question: the user's question.
        evidence: hits shown as numbered evidence (may be empty: no-RAG prompt).
        options: letter → text for multiple-choice tasks.
        image: "seen" (attached for the model), "not_seen" (an image exists but the model is
            text-only) or "none".
        version: prompt template version.
        evidence_chars: each evidence text is cut (at a word) to this many characters.
    """
    check_task(task)
    if task in ("mcq", "mcq_voc") and not options:
        raise UsageError(f"task {task!r} needs options (letter -> text)")
    templates = load_templates(version)
    spec = templates["tasks"][task]
    instruction = spec["instruction"] if evidence else spec["instruction_no_evidence"]
    note = templates["image_notes"][image]
    header = templates["evidence_header"]
    system = templates["system"].strip()
    if image == "not_seen":
        header = templates.get("evidence_header_not_seen", header)
        if evidence and templates.get("system_not_seen"):
            system += " " + templates["system_not_seen"].strip()
        if not evidence:
            note = "You cannot see the medical image; answer from the question alone."
    body = templates["layout"].format(
        image_note=note,
        evidence=format_evidence(evidence, header, evidence_chars),
        question=question.strip(), options=format_options(options), instruction=instruction)
    body = "\n".join(line for line in body.splitlines() if line.strip())
    return [{"role": "system", "content": system},
            {"role": "user", "content": body}]

