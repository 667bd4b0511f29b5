"""Read calibration results: JSONL rows ``{"id", "k", "correct"}``, one per sample per k.

Rows may carry a ``task`` (the evaluation runner's ``calibration.jsonl`` does): a sample is then
identified by (task, id), and ``task=`` keeps one task only.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cal.jsonl")
    >>> _ = open(path, "w").write('{"id": "a", "k": 1, "correct": true}\\n'
    ...                           '{"id": "a", "k": 3, "correct": 0}\\n')
    >>> read_calibration_results(path)
    {1: [True], 3: [False]}
"""

from __future__ import annotations

import json
from pathlib import Path

from mmedrag.errors import InputError


def _parse_row(line: str, path: str, number: int) -> tuple[str, str, int, bool]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", path=path, line=number) from None
    if not isinstance(row, dict):
        raise InputError("expected a JSON object", path=path, line=number)
    for name in ("id", "k", "correct"):
        if name not in row:
            raise InputError("missing field", path=path, line=number, field=name)
    k, correct = row["k"], row["correct"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"k must be a non-negative integer, got {k!r}", path=path, line=number,
                         field="k")
    if correct not in (True, False, 0, 1):
        raise InputError(f"correct must be true/false or 0/1, got {correct!r}", path=path,
                         line=number, field="correct")
    return str(row.get("task", "")), str(row["id"]), int(k), bool(correct)


def read_calibration_results(path: str | Path, task: str | None = None) -> dict[int, list[bool]]:
    """Per-k correctness lists, aligned on sample id (sorted), from a JSONL file.

    Every k must be evaluated on the same sample ids, once each: the guarantee is about one
    calibration set. Errors name the file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("calibration results not found", path=str(path))
    table: dict[int, dict[str, bool]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row_task, sample_id, k, correct = _parse_row(line, str(path), number)
            if task is not None and row_task != task:
                continue
            sample = f"{row_task}/{sample_id}" if row_task else sample_id
            if sample in table.setdefault(k, {}):
                raise InputError(f"duplicate result for id {sample!r} with k={k}", path=str(path),
                                 line=number)
            table[k][sample] = correct
    if not table:
        which = f" for task {task!r}" if task is not None else ""
        raise InputError(f"no calibration results{which} in file", path=str(path))
    reference_k = min(table)
    ids = sorted(table[reference_k])
    for k, rows in sorted(table.items()):
        if set(rows) != set(ids):
            raise InputError(f"k={k} has {len(rows)} samples but k={reference_k} has {len(ids)} "
                             f"(or different ids): evaluate every k on the same calibration ids",
                             path=str(path))
    return {k: [table[k][i] for i in ids] for k in sorted(table)}
