"""Benchmarks as small definitions: a data loader, the prompt task, a scorer and an aggregator.

A :class:`TaskSpec` is data plus tiny hooks (in the manner of lm-evaluation-harness): the loader
yields :class:`Sample` objects, the pipeline answers them with the prompt task ``kind``, the
scorer turns (sample, answer) into a small stats dict, and the aggregator turns a list of stats
into metrics (so bootstrap CIs only re-aggregate). Built-in tasks live in ``builtin.py``; groups
(``vqa``, ``mirage``, ...) select several at once.

Example:
    >>> from mmedrag.evaluation.tasks import get_task, resolve_tasks
    >>> get_task("vqa-rad-closed").kind
    'closed_vqa'
    >>> [t.name for t in resolve_tasks("mirage")][:2]
    ['mirage-mmlu', 'mirage-medqa']
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedrag.errors import UsageError


@dataclass
class Sample:
    """One evaluation item.

    Attributes:
        id: unique within the task.
        question: the question (for report generation, the instruction).
        reference: the reference answer (yes/no, option letter, text) or several references.
        image: absolute image path, or None for text-only items.
        options: letter → option text for multiple choice.
        domain: breakdown label (organ, modality, source dataset ...).
        exclude_ids: index record ids this item must never retrieve (its own abstract, ...).
        meta: anything else worth keeping in the per-sample rows.

    Example:
        >>> Sample(id="1", question="Is there an effusion?", reference="yes").references
        ['yes']
    """

    id: str
    question: str
    reference: str | list[str]
    image: str | None = None
    options: dict[str, str] | None = None
    domain: str = ""
    exclude_ids: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        return list(self.reference) if isinstance(self.reference, list) else [self.reference]


Loader = Callable[[Path], Iterable[Sample]]
Scorer = Callable[[Sample, Any], dict[str, Any]]
Aggregator = Callable[[list[dict[str, Any]]], dict[str, Any]]


@dataclass
class TaskSpec:
    """A benchmark definition.

    Attributes:
        name: registry name (``vqa-rad-closed``).
        kind: the pipeline prompt task (closed_vqa | open_vqa | report | mcq | mcq_voc | longform).
        loader: ``loader(path) -> samples``; ``path`` is ``data`` under the data root, or a file
            the user passes (``--task name=path``).
        scorer: ``scorer(sample, answer) -> stats`` (must include ``correct`` when defined).
        aggregate: ``aggregate(list of stats) -> metrics``.
        primary: the headline metric (for plots and Pareto fronts).
        data: default path relative to the data root.
        groups: group names that select this task.
        description: one line for ``--help`` and reports.
        path: a user file that replaces ``data`` (``--task name=PATH``).

    Example:
        >>> spec = get_task("pubmedqa")
        >>> spec.kind, spec.primary, spec.data
        ('mcq', 'accuracy', 'pubmedqa')
    """

    name: str
    kind: str
    loader: Loader
    scorer: Scorer
    aggregate: Aggregator
    primary: str
    data: str = ""
    groups: tuple[str, ...] = ()
    description: str = ""
    path: Path | None = None

    def resolve_path(self, data_root: Path | None) -> Path:
        if self.path is not None:
            return self.path
        if data_root is None:
            raise UsageError(f"task {self.name}: give --data (the folder holding {self.data}) "
                             f"or a file with --task {self.name}=PATH")
        return Path(data_root) / self.data

    def load(self, data_root: Path | None = None, limit: int | None = None,
             seed: int | None = None) -> list[Sample]:
        """Samples in file order; with ``seed`` a seeded shuffle first; ``limit`` keeps the head.

        A fixed seed makes ``--limit`` grow a run by appending, never by reshuffling.
        """
        path = self.resolve_path(data_root)
        if not path.exists():
            raise UsageError(f"task {self.name}: {path} does not exist")
        samples = list(self.loader(path))
        ids = [s.id for s in samples]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise UsageError(f"task {self.name}: {path}: duplicate sample ids {dupes}")
        if seed is not None:
            random.Random(seed).shuffle(samples)
        return samples[:limit] if limit is not None else samples


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add (or replace) a task definition."""
    TASKS[spec.name] = spec
    return spec


def _ensure_builtin() -> None:
    from mmedrag.evaluation.tasks import builtin  # noqa: F401  (registers on import)


def task_names() -> list[str]:
    _ensure_builtin()
    return list(TASKS)


def groups() -> dict[str, list[str]]:
    """Group name → member task names."""
    _ensure_builtin()
    out: dict[str, list[str]] = {}
    for spec in TASKS.values():
        for group in spec.groups:
            out.setdefault(group, []).append(spec.name)
    return out


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; unknown names get a "did you mean" error."""
    _ensure_builtin()
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS) + list(groups()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown task {name!r}{hint} (see `mmedrag eval run --list-tasks`)")
    return TASKS[name]


_SWAPPABLE = {"mcq": ("mcq", "mcq_voc"), "mcq_voc": ("mcq", "mcq_voc"),
              "report": ("report", "longform"), "longform": ("report", "longform")}


def resolve_tasks(spec: str) -> list[TaskSpec]:
    """Comma-separated task or group names.

    ``name=PATH`` points a task at a user file; ``name:PROMPT`` asks it with another prompt of
    the same family (``mirage-medqa:mcq_voc`` for Verification-of-Choice).
    """
    import dataclasses

    _ensure_builtin()
    found: list[TaskSpec] = []
    table = groups()
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        head, _, path = item.partition("=")
        name, _, kind = head.partition(":")
        if name in table and not path and not kind:
            found.extend(TASKS[n] for n in table[name])
            continue
        task = get_task(name)
        if kind:
            if kind not in _SWAPPABLE.get(task.kind, (task.kind,)):
                raise UsageError(f"task {name}: prompt {kind!r} does not fit a {task.kind} task")
            task = dataclasses.replace(task, name=f"{name}:{kind}", kind=kind)
        found.append(dataclasses.replace(task, path=Path(path)) if path else task)
    if not found:
        raise UsageError("no task selected: pass --task NAME (a task or a group)")
    return list({t.name: t for t in found}.values())

