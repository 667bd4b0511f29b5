"""The evaluation runner: pipelines × tasks → per-sample rows, aggregates, calibration rows.

A run directory holds

* ``run.json`` — configuration, tasks, variants, options, software versions;
* ``rows.jsonl`` — one row per (variant, task, sample), appended and flushed as each sample
  finishes, so an interrupted run resumes where it stopped (rows already there are skipped);
* ``generations.sqlite`` — the generation cache (key = messages + images + generator config),
  so a re-run, a grown ``--limit`` or another variant with the same prompt costs nothing;
* ``metrics.json`` — aggregate metrics with bootstrap 95 % CIs, per-domain breakdown, tokens,
  seconds and dollars, factuality diagnostics (see ``aggregate.py``);
* ``calibration.jsonl`` — ``{"id", "k", "correct"}`` rows for RULE's calibrated k, written
  when the run has fixed-k variants (``--calibration-ks``).

Example:
    >>> runner = Runner(pipeline, tasks=resolve_tasks("vqa-rad-closed"), out="runs/a",
    ...                 variants=parse_variants("no-rag,rag"), data_root="../shared/data",
    ...                 limit=20)                                         # doctest: +SKIP
    >>> summary = runner.run()                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mmedrag.errors import MmedragError, UsageError
from mmedrag.evaluation.cache import CachingGenerator, GenerationCache
from mmedrag.evaluation.tasks import Sample, TaskSpec
from mmedrag.evaluation.tasks.builtin import RETRIEVAL_KINDS
from mmedrag.evaluation.variants import Variant

ROWS = "rows.jsonl"


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of a run (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / ROWS
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def noise_image(size: tuple[int, int] = (224, 224), seed: int = 0) -> Any:
    """Gaussian N(0,1) noise clipped to [0, 1] as an RGB image (the MMed-RAG noise image)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(0.0, 1.0, (size[1], size[0], 3)), 0.0, 1.0)
    return Image.fromarray((pixels * 255).astype("uint8"), "RGB")


class Runner:
    """Runs every variant of a pipeline on every task, resumably and with a generation cache.

    Args:
        pipeline: a :class:`mmedrag.pipeline.Pipeline` (or anything with ``answer``,
            ``retrieve``, ``with_overrides``, ``generator`` and ``config``).
        tasks: task definitions (``resolve_tasks``).
        out: the run directory.
        variants: the pipeline variants (``parse_variants``).
        data_root: where task data paths are resolved.
        limit / seed: evaluate the first ``limit`` samples (after a seeded shuffle if ``seed``).
        workers: threads for thread-safe (HTTP) generators; others run one at a time.
        copy_reference: also answer closed questions with a noise image but the real image's
            retrieval (the copy-reference diagnostic; one extra generation per sample).
        progress: show a progress bar on stderr.
        cache_path: the generation cache (default ``out/generations.sqlite``); share one file
            between run directories to reuse generations across them.

    Example:
        >>> Runner(pipeline, resolve_tasks("pubmedqa"), "runs/p", parse_variants("no-rag,rag"),
        ...        data_root="../shared/data", limit=50, seed=0).run()   # doctest: +SKIP
    """

    def __init__(self, pipeline: Any, tasks: list[TaskSpec], out: str | Path,
                 variants: list[Variant], data_root: str | Path | None = None,
                 limit: int | None = None, seed: int | None = None, workers: int = 1,
                 copy_reference: bool = False, progress: bool = True,
                 cache_path: str | Path | None = None) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        self.pipeline = pipeline
        self.tasks = tasks
        self.out = Path(out)
        self.variants = variants
        self.data_root = Path(data_root) if data_root else None
        self.limit, self.seed, self.workers = limit, seed, workers
        self.copy_reference = copy_reference
        self.progress = progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = GenerationCache(cache_path or self.out / "generations.sqlite")
        component = getattr(getattr(pipeline, "config", None), "generator", None)
        self.generator = CachingGenerator(
            pipeline.generator, self.cache,
            {"component": component.model_dump()} if hasattr(component, "model_dump") else None)
        self._write_lock = threading.Lock()
        self.computed = 0
        self.skipped = 0

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Evaluate everything not already in ``rows.jsonl``; write metrics; return a summary."""
        from mmedrag.evaluation.aggregate import aggregate_run, write_calibration

        self._write_run_json()
        _end_torn_line(self.out / ROWS)
        done = {(r["variant"], r["task"], r["id"]) for r in read_rows(self.out)}
        started = time.perf_counter()
        selected: set[tuple[str, str]] = set()
        for task in self.tasks:
            samples = task.load(self.data_root, self.limit, self.seed)
            selected |= {(task.name, s.id) for s in samples}
            for variant in self._variants_for(task):
                todo = [s for s in samples if (variant.name, task.name, s.id) not in done]
                self.skipped += len(samples) - len(todo)
                if todo:
                    self._run_one(task, variant, todo)
        # Metrics cover this invocation's samples (rows from a larger earlier --limit stay on
        # disk, reused when the run grows again).
        rows = [r for r in read_rows(self.out) if (r["task"], r["id"]) in selected]
        prices = getattr(self.pipeline.config, "prices", {}) or {}
        metrics = aggregate_run(rows, self.tasks, prices=prices)
        metrics["run"] = {"computed": self.computed, "skipped_already_done": self.skipped,
                          "parallel_workers": self.workers if self.generator.thread_safe else 1,
                          "cache_hits": self.generator.hits, "cache_misses": self.generator.misses,
                          "seconds": round(time.perf_counter() - started, 2)}
        metrics["run"]["calibration_rows"] = write_calibration(rows,
                                                               self.out / "calibration.jsonl")
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str),
                                               encoding="utf-8")
        return metrics

    def _variants_for(self, task: TaskSpec) -> list[Variant]:
        if task.kind in RETRIEVAL_KINDS:  # generation-free: one pass, whatever the ablation
            return [Variant("retrieval")]
        return self.variants

    def _run_one(self, task: TaskSpec, variant: Variant, samples: list[Sample]) -> None:
        pipe = variant.build(self.pipeline, generator=self.generator)
        parallel = self.workers > 1 and self.generator.thread_safe
        bar = _progress(len(samples), f"{task.name} [{variant.name}]", self.progress)
        work: Callable[[Sample], dict[str, Any]] = (
            (lambda s: self._retrieval_row(pipe, task, s)) if task.kind in RETRIEVAL_KINDS
            else (lambda s: self._row(pipe, task, variant, s)))
        try:
            if parallel:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    for row in pool.map(work, samples):
                        self._append(row, bar)
            else:
                for sample in samples:
                    self._append(work(sample), bar)
        finally:
            bar.close()

    def _append(self, row: dict[str, Any], bar: Any) -> None:
        line = json.dumps(row, ensure_ascii=False, default=str)
        with self._write_lock:
            with open(self.out / ROWS, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
            self.computed += 1
            bar.update(1)

    # -- one sample -------------------------------------------------------------------------
    def _answer(self, pipe: Any, task: TaskSpec, variant: Variant, sample: Sample,
                image: Any = None, retrieval_image: Any = None) -> Any:
        kind = sample.meta.get("kind", task.kind)
        return pipe.answer(sample.question, image=image if image is not None else sample.image,
                           task=kind, options=sample.options, use_rag=variant.use_rag,
                           retrieval_image=retrieval_image,
                           exclude_ids=set(sample.exclude_ids) or None)

    def _row(self, pipe: Any, task: TaskSpec, variant: Variant, sample: Sample) -> dict[str, Any]:
        try:
            answer = self._answer(pipe, task, variant, sample)
        except MmedragError as exc:
            raise MmedragError(f"task {task.name}, sample {sample.id}: {exc}") from exc
        hit = self.generator.last_hit
        stats = task.scorer(sample, answer)
        row = _base_row(task, variant, sample, stats)
        gen_seconds = answer.seconds.get("generate", 0.0)
        row.update({
            "messages": answer.messages, "raw": answer.text, "parsed": answer.parsed,
            "yes_probability": answer.yes_probability, "used_rag": answer.used_rag,
            "image_seen": answer.image_seen, "selection_k": answer.selection.get("k"),
            "evidence": [{"n": e.number, "id": e.hit.id, "score": round(float(e.hit.score), 4),
                          "cited": e.cited, "text": e.hit.record.text[:400]}
                         for e in answer.evidence],
            "tokens_in": answer.tokens_in, "tokens_out": answer.tokens_out,
            "seconds": dict(answer.seconds), "cache_hit": hit,
            "model": getattr(self.generator, "model", self.generator.name),
        })
        if hit:  # report the time the generation originally took, not the cache lookup
            original = self.generator.last_seconds
            row["seconds"]["generate"] = round(original, 4)
            row["seconds"]["total"] = round(row["seconds"].get("total", 0.0) - gen_seconds
                                            + original, 4)
        if self.copy_reference and variant.use_rag and sample.image and task.kind == "closed_vqa":
            noisy = self._answer(pipe, task, variant, sample, image=noise_image(),
                                 retrieval_image=sample.image)
            row["noise_correct"] = bool(task.scorer(sample, noisy).get("correct"))
        return row

    def _retrieval_row(self, pipe: Any, task: TaskSpec, sample: Sample) -> dict[str, Any]:
        start = time.perf_counter()
        found = pipe.retrieve(sample.question, sample.image, k=10)
        hits = found.hits
        seconds = time.perf_counter() - start
        stats = (task.scorer(sample, [h.id for h in hits]) if task.kind == "retrieval"
                 else task.scorer(sample, found.domain))
        row = _base_row(task, Variant("retrieval"), sample, stats)
        row.update({"tokens_in": 0, "tokens_out": 0, "seconds": {"total": round(seconds, 4)},
                    "evidence": [{"n": i, "id": h.id, "score": round(float(h.score), 4)}
                                 for i, h in enumerate(hits, 1)]})
        return row

    def _write_run_json(self) -> None:
        import platform

        info = {"config": json.loads(self.pipeline.config.model_dump_json())
                if hasattr(self.pipeline.config, "model_dump_json") else {},
                "tasks": [{"name": t.name, "kind": t.kind, "primary": t.primary,
                           "path": str(t.resolve_path(self.data_root))} for t in self.tasks],
                "variants": [v.to_dict() for v in self.variants],
                "limit": self.limit, "seed": self.seed, "workers": self.workers,
                "copy_reference": self.copy_reference,
                "generator": self.generator.config(),
                "index": str(getattr(getattr(self.pipeline, "index", None), "dir", "")),
                "python": platform.python_version(), "argv": sys.argv}
        path = self.out / "run.json"
        if path.exists():
            history = json.loads(path.read_text(encoding="utf-8")).get("history", [])
            info["history"] = history + [time.strftime("%Y-%m-%dT%H:%M:%S")]
        else:
            info["history"] = [time.strftime("%Y-%m-%dT%H:%M:%S")]
        path.write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")


def _end_torn_line(path: Path) -> None:
    """After a crash mid-write, start the next row on a fresh line (the torn one is skipped)."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as handle:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def _base_row(task: TaskSpec, variant: Variant, sample: Sample, stats: dict[str, Any]
              ) -> dict[str, Any]:
    return {"variant": variant.name, "task": task.name, "kind": task.kind,
            "id": sample.id, "domain": sample.domain, "question": sample.question,
            "options": sample.options, "reference": sample.reference,
            "correct": stats.get("correct"), "stats": stats, "fixed_k": variant.fixed_k}


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, unit="q", dynamic_ncols=True)
