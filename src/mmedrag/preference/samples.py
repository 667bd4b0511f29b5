"""Training samples for the preference builder, from the evaluation harness's task definitions.

``task`` is a harness task name or ``name=PATH`` (``vqa-closed=../shared/data/vqa-rad/train.jsonl``
trains on VQA-RAD's own train split; ``bioasq-yesno`` reads BioASQ from the data root), or a
plain ``.jsonl`` file with ``question``, ``answer`` and optionally ``id``, ``image`` (relative to
the file), ``options``, ``answer_type``, ``domain``.

``split`` carves a stable train/test split out of tasks that have none: a sample is in ``test``
when the hash of its id (with ``seed``) falls below 30 %; ``all`` keeps everything.

Example:
    >>> samples = load_samples("vqa-closed=../shared/data/vqa-rad/train.jsonl")  # doctest: +SKIP
    >>> train = load_samples("bioasq-yesno", data_root="data", split="train")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError, UsageError
from mmedrag.preference.pairs import Sample

TEST_FRACTION = 0.3
SPLITS = ("all", "train", "test")


def in_split(sample_id: str, split: str, seed: int = 0) -> bool:
    """Whether ``sample_id`` belongs to ``split`` under the hash rule (see the module docstring)."""
    if split == "all":
        return True
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    is_test = int.from_bytes(digest[:8], "little") / 2**64 < TEST_FRACTION
    return is_test if split == "test" else not is_test


def read_jsonl_samples(path: Path, domain_field: str = "domain") -> list[Sample]:
    """Samples from a generic JSONL file (see the module docstring for the fields)."""
    if not path.exists():
        raise UsageError(f"{path}: file not found")
    from mmedrag.ingest.jsonl import iter_jsonl

    samples = []
    for number, row in iter_jsonl(path):
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


_ANSWER_TYPE = {"closed_vqa": "CLOSED", "open_vqa": "OPEN"}


def from_harness(sample: Any, kind: str) -> Sample:
    """A preference :class:`Sample` from an evaluation-harness sample of a task of ``kind``."""
    reference = sample.references[0] if sample.references else ""
    kind = str(sample.meta.get("kind") or kind)  # e.g. closed but not yes/no → open_vqa
    return Sample(id=str(sample.id), question=sample.question, answer=str(reference),
                  image=sample.image, options=sample.options,
                  answer_type=_ANSWER_TYPE.get(kind), domain=sample.domain or None,
                  task=kind, exclude_ids=set(sample.exclude_ids), meta=dict(sample.meta))


def load_samples(task: str, data_root: str | Path | None = None, split: str = "all",
                 limit: int | None = None, seed: int = 0) -> list[Sample]:
    """Samples of ``task`` in file order, restricted to ``split``, at most ``limit``.

    Args:
        task: harness task name, ``name=PATH``, or a ``.jsonl`` path.
        data_root: the shared data folder (harness tasks with a default path).
        split: ``all``, ``train`` or ``test`` (hash split, see the module docstring).
        limit: keep the first N samples of the split.
        seed: seeds the hash split.
    """
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if task.endswith(".jsonl") and "=" not in task:
        samples = read_jsonl_samples(Path(task))
    else:
        from mmedrag.evaluation.tasks import resolve_tasks

        specs = resolve_tasks(task)
        samples = [from_harness(s, spec.kind) for spec in specs
                   for s in spec.load(Path(data_root) if data_root else None)]
    samples = [s for s in samples if in_split(s.id, split, seed)]
    if not samples:
        raise UsageError(f"task {task!r} ({split}) has no samples")
    return samples[:limit] if limit else samples
