"""Build RAG-PT preference data by running the pipeline on training samples.

For each sample the pipeline answers (1) without retrieval, (2) with the domain-aware retrieved
and selected context x_r and (3), when the generator sees images, with x_r kept but the image
replaced by seeded N(0,1) noise clipped to [0,1] and/or an unrelated image from another domain.
:func:`mmedrag.preference.pairs.pairs_for_sample` turns the answers into cm/oa1/oa2 pairs.

Output folder: ``cm.jsonl``, ``oa1.jsonl``, ``oa2.jsonl``, ``pairs.jsonl`` (all, in that order),
``outputs.jsonl`` (every answer with its messages, for audit), ``images/`` (replacement images)
and ``manifest.json`` (model, retriever, selector, seeds, judge rules, counts, time).

Example:
    >>> builder = PreferenceBuilder(pipeline, replace=("noise",), seed=0)  # doctest: +SKIP
    >>> result = builder.build(samples, "prefs/")                           # doctest: +SKIP
    >>> result.counts
    {'cm': 12, 'oa1': 30, 'oa2': 9, 'total': 51}
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import UsageError
from mmedrag.generation.protocol import GenerationParams
from mmedrag.preference.judge import Judge
from mmedrag.preference.pairs import (
    SUBSETS,
    ModelOutput,
    PreferencePair,
    Sample,
    SampleOutputs,
    deduplicate,
    pairs_for_sample,
)

REPLACEMENTS = ("noise", "unrelated")
TASK_OF_KIND = {"closed": "closed_vqa", "choice": "mcq", "open": "open_vqa"}


def _seed_for(seed: int, *parts: str) -> int:
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def noise_image(size: tuple[int, int], seed: int) -> Any:
    """RGB image of N(0,1) noise clipped to [0,1] (MMed-RAG's replacement), seeded."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.standard_normal((size[1], size[0], 3)), 0.0, 1.0)
    return Image.fromarray((pixels * 255).round().astype(np.uint8), mode="RGB")


def pick_unrelated(sample: Sample, pool: list[tuple[str, str]], seed: int) -> str | None:
    """An image from ``pool`` ((path, domain) pairs) whose domain differs from the sample's."""
    candidates = sorted({path for path, domain in pool
                         if domain and domain != sample.domain and path != sample.image})
    if not candidates:
        return None
    return candidates[_seed_for(seed, sample.id, "unrelated") % len(candidates)]


@dataclass
class BuildResult:
    """What a build produced: kept pairs, counts per subset, and the manifest written."""

    pairs: list[PreferencePair]
    counts: dict[str, int]
    manifest: dict[str, Any] = field(default_factory=dict)


class PreferenceBuilder:
    """Runs a :class:`mmedrag.pipeline.Pipeline` on samples and writes RAG-PT pairs.

    Args:
        pipeline: the domain-aware RAG pipeline (its generator is the model being aligned).
        judge: right/wrong rules (default :class:`Judge` with token-F1 threshold 0.5).
        replace: image replacements for cm pairs: any of ``noise``, ``unrelated``.
        seed: seeds noise images and the choice of unrelated images.
        max_tokens: generation budget per answer (None: the pipeline's per-task default).
        image_pool: (image path, domain) candidates for unrelated images (default: the samples').
        resume: reuse the answers a previous (interrupted) build of the same samples left in
            ``outputs.jsonl`` instead of generating them again.

    Example:
        >>> PreferenceBuilder(pipe, replace=("noise",)).build(samples, "out/")  # doctest: +SKIP
    """

    def __init__(self, pipeline: Any, judge: Judge | None = None,
                 replace: tuple[str, ...] = REPLACEMENTS, seed: int = 0,
                 max_tokens: int | None = None,
                 image_pool: list[tuple[str, str]] | None = None, resume: bool = False) -> None:
        unknown = [kind for kind in replace if kind not in REPLACEMENTS]
        if unknown:
            raise UsageError(f"unknown image replacement {unknown[0]!r}: "
                             "use noise, unrelated or both")
        self.pipeline = pipeline
        self.judge = judge or Judge()
        self.replace = tuple(replace)
        self.seed = seed
        self.max_tokens = max_tokens
        self.image_pool = image_pool
        self.resume = resume
        self.notes: list[str] = []

    @property
    def sees_images(self) -> bool:
        return bool(getattr(self.pipeline.generator, "sees_images", False))

    def _params(self) -> GenerationParams | None:
        return GenerationParams(max_tokens=self.max_tokens) if self.max_tokens else None

    def _ask(self, sample: Sample, image: Any, use_rag: bool,
             evidence: list[Any] | None = None) -> tuple[Any, ModelOutput]:
        answer = self.pipeline.answer(sample.question, image=image,
                                      task=sample.task or TASK_OF_KIND[sample.kind],
                                      options=sample.options, use_rag=use_rag, evidence=evidence,
                                      retrieval_image=sample.image if evidence is None else None,
                                      params=self._params(),
                                      exclude_ids=sample.exclude_ids or None)
        output = ModelOutput(text=answer.text, parsed=answer.parsed, messages=answer.messages,
                             evidence_ids=[e.hit.id for e in answer.evidence])
        return answer, output

    def _replacement(self, kind: str, sample: Sample, images_dir: Path) -> str | None:
        if kind == "unrelated":
            return pick_unrelated(sample, self.image_pool or [], self.seed)
        from mmedrag.ingest.images import load_image

        size = load_image(sample.image).size
        path = images_dir / f"{hashlib.sha1(sample.id.encode()).hexdigest()[:12]}-noise.png"
        if not path.exists():
            noise_image(size, _seed_for(self.seed, sample.id, "noise")).save(path)
        return str(path)

    def outputs_for(self, sample: Sample, images_dir: Path) -> SampleOutputs:
        """The model's answers for one sample: no RAG, RAG, and each replaced image."""
        _, no_rag = self._ask(sample, sample.image, use_rag=False)
        rag_answer, rag = self._ask(sample, sample.image, use_rag=True)
        rag.image = sample.image
        outputs = SampleOutputs(no_rag=no_rag, rag=rag)
        if not (sample.image and self.sees_images):
            return outputs
        hits = [e.hit for e in rag_answer.evidence]
        for kind in self.replace:
            path = self._replacement(kind, sample, images_dir)
            if path is None:
                continue
            _, output = self._ask(sample, path, use_rag=True, evidence=hits)
            output.image = path
            outputs.replaced[kind] = output
        return outputs

    def build(self, samples: list[Sample], out_dir: str | Path,
              progress: Callable[[int, int], None] | None = None) -> BuildResult:
        """Run every sample, write the subsets, the combined file and the manifest."""
        out = Path(out_dir)
        images_dir = out / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        if self.image_pool is None:
            self.image_pool = [(s.image, s.domain or "") for s in samples if s.image]
        if any(s.image for s in samples) and not self.sees_images:
            self.notes.append(f"cm pairs skipped: generator "
                              f"{getattr(self.pipeline.generator, 'name', '?')} does not see "
                              "images, so a replaced image cannot change its answer")
        start = time.perf_counter()
        pairs: list[PreferencePair] = []
        stats = {"no_rag_right": 0, "rag_right": 0, "reused": 0}
        done = read_audit(out / "outputs.jsonl")
        with (out / "outputs.jsonl").open("w", encoding="utf-8") as audit:
            for number, sample in enumerate(samples, 1):
                outputs = done.get(sample.id) if self.resume else None
                if outputs is None:
                    outputs = self.outputs_for(sample, images_dir)
                else:
                    stats["reused"] += 1
                found = pairs_for_sample(sample, outputs, self.judge)
                pairs.extend(found)
                self._tally(stats, sample, outputs)
                audit.write(json.dumps(_audit_row(sample, outputs, found), ensure_ascii=False)
                            + "\n")
                audit.flush()
                if progress:
                    progress(number, len(samples))
        kept, dropped = deduplicate(pairs)
        counts = write_pairs(kept, out)
        manifest = self._manifest(samples, counts, dropped, stats, time.perf_counter() - start)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        return BuildResult(kept, counts, manifest)

    def _tally(self, stats: dict[str, int], sample: Sample, outputs: SampleOutputs) -> None:
        for name, output in (("no_rag_right", outputs.no_rag), ("rag_right", outputs.rag)):
            stats[name] += int(self.judge.is_correct(output.text, sample.answer, sample.kind,
                                                     sample.options, output.parsed))

    def _manifest(self, samples: list[Sample], counts: dict[str, int], dropped: int,
                  stats: dict[str, int], seconds: float) -> dict[str, Any]:
        config = self.pipeline.config
        generator = self.pipeline.generator
        index = self.pipeline.index
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": getattr(generator, "name", type(generator).__name__),
            "sees_images": self.sees_images,
            "retrieval": config.retrieval.model_dump(),
            "selector": config.selector.model_dump(),
            "reranker": config.reranker.model_dump(),
            "prompt_version": config.prompt_version,
            "index": str(getattr(index, "dir", "")) if index is not None else None,
            "replace": list(self.replace), "seed": self.seed, "max_tokens": self.max_tokens,
            "judge": self.judge.describe(),
            "samples": len(samples), "counts": counts, "duplicates_dropped": dropped,
            "answers_reused": stats["reused"],
            "accuracy": {"no_rag": stats["no_rag_right"] / max(1, len(samples)),
                         "rag": stats["rag_right"] / max(1, len(samples))},
            "notes": self.notes, "seconds": round(seconds, 1),
            "format": "TRL conversational DPO rows (prompt, chosen, rejected, images); cm rows "
                      "add rejected_images (the replaced image the rejected side saw)",
        }


def _output_of(data: dict[str, Any]) -> ModelOutput:
    return ModelOutput(text=data["text"], parsed=data.get("parsed"),
                       messages=data.get("messages") or [], image=data.get("image"),
                       evidence_ids=list(data.get("evidence_ids") or []))


def read_audit(path: Path) -> dict[str, SampleOutputs]:
    """Answers per sample id from an earlier build's ``outputs.jsonl`` (torn lines skipped)."""
    found: dict[str, SampleOutputs] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            found[str(row["sample_id"])] = SampleOutputs(
                no_rag=_output_of(row["no_rag"]), rag=_output_of(row["rag"]),
                replaced={k: _output_of(v) for k, v in (row.get("replaced") or {}).items()})
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return found


def _audit_row(sample: Sample, outputs: SampleOutputs, pairs: list[PreferencePair]) -> dict:
    def dump(output: ModelOutput) -> dict[str, Any]:
        return {"text": output.text, "parsed": output.parsed, "image": output.image,
                "evidence_ids": output.evidence_ids, "messages": output.messages}

    return {"sample_id": sample.id, "question": sample.question, "answer": sample.answer,
            "image": sample.image, "no_rag": dump(outputs.no_rag), "rag": dump(outputs.rag),
            "replaced": {k: dump(v) for k, v in outputs.replaced.items()},
            "pairs": [p.subset for p in pairs]}


def write_pairs(pairs: list[PreferencePair], out: Path) -> dict[str, int]:
    """Write one JSONL per subset plus ``pairs.jsonl``; returns counts (and ``total``)."""
    counts: dict[str, int] = {}
    with (out / "pairs.jsonl").open("w", encoding="utf-8") as combined:
        for subset in SUBSETS:
            rows = [p.to_trl() for p in pairs if p.subset == subset]
            counts[subset] = len(rows)
            with (out / f"{subset}.jsonl").open("w", encoding="utf-8") as handle:
                for row in rows:
                    line = json.dumps(row, ensure_ascii=False) + "\n"
                    handle.write(line)
                    combined.write(line)
    counts["total"] = sum(counts[s] for s in SUBSETS)
    return counts
