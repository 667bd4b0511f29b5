"""Training samples for the preference builder: named tasks over ../shared/data, or any JSONL.

Named tasks (``--task``):

* ``vqa-rad``: ``vqa-rad/{split}.jsonl`` (image, question, answer, answer_type, organ → domain);
* ``bioasq``: ``bioasq/questions.jsonl`` yes/no questions, split by a hash of the id
  (``test`` = 30 %, the rest ``train``; stable when questions are added);
* a path to a JSONL file with ``question``, ``answer`` and optionally ``id``, ``image``
  (relative to the file), ``options``, ``answer_type``, ``domain``.

Example:
    >>> samples = load_samples("vqa-rad", data_root="../shared/data", split="train")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError, UsageError
from mmedrag.preference.pairs import Sample

TEST_FRACTION = 0.3


def _in_split(sample_id: str, split: str, seed: int = 0) -> bool:
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    is_test = int.from_bytes(digest[:8], "little") / 2**64 < TEST_FRACTION
    return is_test if split == "test" else not is_test


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.exists():
        raise UsageError(f"{path}: file not found")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise InputError(f"invalid JSON: {exc.msg}", path=str(path),
                                     line=number) from exc
    return rows


def read_jsonl_samples(path: Path, domain_field: str = "domain") -> list[Sample]:
    """Samples from a generic JSONL file (see the module docstring for the fields)."""
    samples = []
    for number, row in _rows(path):
        for name in ("question", "answer"):
            if not str(row.get(name, "")).strip():
                raise InputError("missing or empty", path=str(path), line=number, field=name)
        image = row.get("image") or None
        if image and not Path(image).is_absolute():
            image = str(path.parent / image)
        samples.append(Sample(id=str(row.get("id", number)), question=str(row["question"]),
                              answer=str(row["answer"]), image=image,
                              options=row.get("options") or None,
                              answer_type=row.get("answer_type") or None,
                              domain=row.get(domain_field) or None))
    return samples


def load_samples(task: str, data_root: str | Path | None = None, split: str = "train",
                 limit: int | None = None, answer_types: tuple[str, ...] | None = None,
                 ) -> list[Sample]:
    """Samples of ``task`` (a name above or a JSONL path), at most ``limit``, in file order.

    Args:
        task: ``vqa-rad``, ``bioasq`` or a JSONL path.
        data_root: the shared data folder (named tasks only).
        split: ``train`` or ``test``.
        limit: keep the first N samples.
        answer_types: keep only these answer types (e.g. ``("CLOSED",)``).
    """
    if split not in ("train", "test"):
        raise UsageError(f"split must be train or test, got {split!r}")
    root = Path(data_root) if data_root else None
    if task == "vqa-rad":
        if root is None:
            raise UsageError("task vqa-rad needs the shared data folder (--data-root)")
        samples = read_jsonl_samples(root / "vqa-rad" / f"{split}.jsonl", domain_field="organ")
    elif task == "bioasq":
        if root is None:
            raise UsageError("task bioasq needs the shared data folder (--data-root)")
        path = root / "bioasq" / "questions.jsonl"
        samples = [Sample(id=str(row["id"]), question=str(row["question"]),
                          answer=str(row["exact_answer"]), answer_type="CLOSED", domain="text")
                   for _, row in _rows(path) if _in_split(str(row["id"]), split)]
    elif task.endswith(".jsonl"):
        samples = read_jsonl_samples(Path(task))
    else:
        raise UsageError(f"unknown task {task!r}: use vqa-rad, bioasq or a .jsonl file")
    if answer_types:
        wanted = {t.upper() for t in answer_types}
        samples = [s for s in samples if (s.answer_type or "").upper() in wanted]
    if not samples:
        raise UsageError(f"task {task!r} ({split}) has no samples")
    return samples[:limit] if limit else samples
