"""RAG-PT preference pairs from model outputs: a pure function, unit-testable without a model.

For one training sample (image x_v, question x_t, truth y) and the model's answers

* without retrieval (``no_rag``, under the no-RAG prompt),
* with the retrieved context x_r (``rag``, under the RAG prompt),
* with x_r but the image replaced by noise or an unrelated image (``replaced[kind]``),

:func:`pairs_for_sample` returns

* **cm** (cross-modality, MMed-RAG's D_cm): the model still answers y with the replaced image →
  (y with the real image) ≻ (y with the replaced image): same prompt and text, different image;
* **oa1** (overall alignment 1): wrong without RAG, right with RAG → y ≻ the no-RAG answer,
  under the RAG prompt. The rejected answer is the one the model gave *under the no-RAG prompt*
  and was judged there (the released MMed-RAG data judged some under the RAG prompt);
* **oa2** (overall alignment 2, RULE's knowledge-balanced pairs): right without RAG, wrong with
  RAG → y ≻ the misled RAG answer, under the RAG prompt.

Example:
    >>> s = Sample(id="q1", question="Is there a fracture?", answer="yes", image="a.png")
    >>> out = SampleOutputs(no_rag=ModelOutput("No.", messages=[{"role": "user", "content": "Q"}]),
    ...                     rag=ModelOutput("Yes.", messages=[{"role": "user", "content": "E+Q"}]))
    >>> [p.subset for p in pairs_for_sample(s, out, Judge())]
    ['oa1']
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mmedrag.preference.judge import Judge, answer_kind

SUBSETS = ("cm", "oa1", "oa2")


@dataclass
class Sample:
    """One training sample: question, truth, optional image (path) and options (choice tasks).

    ``task`` is the pipeline prompt task (closed_vqa, open_vqa, mcq, ...; default from the
    answer's kind); ``exclude_ids`` are index records the sample must never retrieve.
    """

    id: str
    question: str
    answer: str
    image: str | None = None
    options: dict[str, str] | None = None
    answer_type: str | None = None
    domain: str | None = None
    task: str | None = None
    exclude_ids: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``closed``, ``choice`` or ``open`` (how the judge compares answers)."""
        return answer_kind(self.answer, self.options, self.answer_type)

    def target_text(self) -> str:
        """The preferred completion: the truth, with the option text for choice tasks."""
        if self.options and self.answer.strip().upper() in {k.upper() for k in self.options}:
            key = next(k for k in self.options if k.upper() == self.answer.strip().upper())
            return f"{key}. {self.options[key]}"
        return self.answer.strip()


@dataclass
class ModelOutput:
    """One generation as it happened: text, the harness's parse, the messages sent, the image."""

    text: str
    parsed: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    image: str | None = None
    evidence_ids: list[str] = field(default_factory=list)


@dataclass
class SampleOutputs:
    """The model's answers for one sample: without RAG, with RAG, and with replaced images."""

    no_rag: ModelOutput
    rag: ModelOutput
    replaced: dict[str, ModelOutput] = field(default_factory=dict)


@dataclass
class PreferencePair:
    """One DPO pair in TRL's conversational format plus provenance.

    ``images`` go with the prompt for both completions (TRL's format); ``rejected_images`` is
    set only for cm pairs, where the rejected side saw the replaced image.
    """

    subset: str
    sample_id: str
    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str
    images: list[str] = field(default_factory=list)
    rejected_images: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Content hash over prompt, both completions and all images (for deduplication)."""
        blob = json.dumps([self.prompt, self.chosen, self.rejected, self.images,
                           self.rejected_images], sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def is_degenerate(self) -> bool:
        """True when chosen and rejected are identical in both text and image."""
        same_images = self.rejected_images is None or self.rejected_images == self.images
        return self.chosen.strip() == self.rejected.strip() and same_images

    def to_trl(self) -> dict[str, Any]:
        """TRL's DPO row: conversational prompt/chosen/rejected, images, and our provenance."""
        row: dict[str, Any] = {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
            "images": list(self.images),
        }
        if self.rejected_images is not None:
            row["rejected_images"] = list(self.rejected_images)
        row["subset"] = self.subset
        row["sample_id"] = self.sample_id
        row["meta"] = self.meta
        return row


def _images(output: ModelOutput, sample: Sample) -> list[str]:
    image = output.image if output.image is not None else sample.image
    return [image] if image else []


def _right(judge: Judge, output: ModelOutput, sample: Sample) -> bool:
    return judge.is_correct(output.text, sample.answer, kind=sample.kind,
                            options=sample.options, parsed=output.parsed)


def pairs_for_sample(sample: Sample, outputs: SampleOutputs, judge: Judge) -> list[PreferencePair]:
    """All RAG-PT pairs one sample yields (none that are identical in text and image).

    Args:
        sample: the question, truth and real image.
        outputs: the model's answers without RAG, with RAG, and with each replaced image.
        judge: decides right/wrong with the task's rules.
    """
    pairs: list[PreferencePair] = []
    rag_prompt = outputs.rag.messages
    real = _images(outputs.rag, sample)
    target = sample.target_text()
    no_rag_right = _right(judge, outputs.no_rag, sample)
    rag_right = _right(judge, outputs.rag, sample)
    for kind, replaced in sorted(outputs.replaced.items()):
        if not _right(judge, replaced, sample) or not replaced.image:
            continue
        pairs.append(PreferencePair(
            "cm", sample.id, rag_prompt, target, target, real,
            rejected_images=[replaced.image],
            meta={"replacement": kind, "replaced_answer": replaced.text}))
    if rag_right and not no_rag_right:
        pairs.append(PreferencePair(
            "oa1", sample.id, rag_prompt, target, outputs.no_rag.text.strip(), real,
            meta={"rejected_from": "no_rag", "rejected_prompt": outputs.no_rag.messages,
                  "rag_answer": outputs.rag.text}))
    if no_rag_right and not rag_right:
        pairs.append(PreferencePair(
            "oa2", sample.id, rag_prompt, target, outputs.rag.text.strip(), real,
            meta={"rejected_from": "rag", "no_rag_answer": outputs.no_rag.text}))
    return [pair for pair in pairs if not pair.is_degenerate()]


def deduplicate(pairs: list[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Pairs with a content hash seen before dropped (first kept); returns (kept, dropped)."""
    seen: set[str] = set()
    kept: list[PreferencePair] = []
    for pair in pairs:
        key = pair.key()
        if key in seen:
            continue
        seen.add(key)
        kept.append(pair)
    return kept, len(pairs) - len(kept)
