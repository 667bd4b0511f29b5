"""The one object that answers a question: retrieve (the one retrieval flow: route → retrieve →
fuse → rerank → select) → prompt → generate → parse, with a trace and timings for every stage.

The CLI (``mmedrag ask``), the REST server, the evaluation runner and the preference builder are
thin shells around :class:`Pipeline` (or :class:`mmedrag.pipeline.RetrieveOnDemand` around it,
when ``retrieve_on_demand`` is set; :func:`mmedrag.pipeline.build` picks).

Example:
    >>> pipe = Pipeline.from_config("config.yaml", index="idx")            # doctest: +SKIP
    >>> answer = pipe.answer("Is there a pleural effusion?", image="cxr.png",
    ...                      task="closed_vqa")                             # doctest: +SKIP
    >>> answer.parsed, [e.number for e in answer.evidence if e.cited]      # doctest: +SKIP
    ('yes', [1])
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedrag.config import Component, Config
from mmedrag.errors import UsageError
from mmedrag.generation.parse import closed_text_polarity, parse_answer, parse_citations
from mmedrag.generation.prompts import MAX_EVIDENCE_CHARS, build_messages, check_task
from mmedrag.generation.protocol import GenerationParams, Generator
from mmedrag.records import Answer, Evidence, Generation, Hit
from mmedrag.registry import REGISTRY
from mmedrag.retrieval.flow import RetrievalFlow, RetrievalResult, Route
from mmedrag.retrieval.protocol import SearchableIndex
from mmedrag.selection.protocol import Selection

_MAX_TOKENS = {"closed_vqa": 32, "open_vqa": 48, "mcq": 64, "mcq_voc": 256, "report": 256,
               "longform": 384}


class Pipeline:
    """Answers questions (optionally about an image) with retrieved, selected, cited evidence.

    Args:
        config: the whole configuration (retrieval, reranker, selector, generator, prompts).
        index: an open :class:`mmedrag.index.Index`, or None for a pipeline that never retrieves.
        generator: a ready generator; by default built from ``config.generator`` on first use.
        evidence_chars: each evidence text is cut to this many characters in the prompt.

    Example:
        >>> from mmedrag.config import Config, Component
        >>> cfg = Config(generator=Component(name="echo"))
        >>> Pipeline(cfg, index=None).answer("Is this normal?", task="closed_vqa",
        ...                                  use_rag=False).parsed
        'no'
    """

    def __init__(self, config: Config, index: SearchableIndex | None,
                 generator: Generator | None = None,
                 evidence_chars: int = MAX_EVIDENCE_CHARS,
                 flow: RetrievalFlow | None = None) -> None:
        if config.retrieve_on_demand is not None:
            raise UsageError("retrieve_on_demand is applied by RetrieveOnDemand around the "
                             "pipeline: build it with mmedrag.pipeline.build(config, index)")
        self.config = config
        self.evidence_chars = evidence_chars
        self.index = index
        self._generator = generator
        if flow is not None and flow.config is not config:
            raise UsageError("a shared retrieval flow must be built from the same config")
        self._flow = flow or (RetrievalFlow(config, index) if index is not None else None)

    @classmethod
    def from_config(cls, config: Config | str | Path | None = None,
                    index: str | Path | SearchableIndex | None = None,
                    flow: RetrievalFlow | None = None) -> Pipeline:
        """Build from a Config, a YAML path or defaults, and an index folder or open Index."""
        if config is None:
            cfg = Config()
        elif isinstance(config, Config):
            cfg = config
        else:
            cfg = Config.from_yaml(config)
        if isinstance(index, (str, Path)):
            from mmedrag.index import Index

            # a config that names encoders must match the index's (else one clear error)
            written = cfg.index if "index" in cfg.model_fields_set else None
            index = Index.open(index, config=written)
        return cls(cfg, index, flow=flow)

    # -- components --------------------------------------------------------------------------
    @property
    def generator(self) -> Generator:
        """The generator (built from ``config.generator`` on first use)."""
        if self._generator is None:
            spec = self.config.generator
            self._generator = REGISTRY.create("generator", spec.name, **spec.options)
        return self._generator

    def with_overrides(self, selector: Component | None = None, k: int | None = None,
                       generator: Generator | None = None) -> Pipeline:
        """A cheap copy sharing the index, encoders and generator, for ablations.

        Example:
            >>> fixed3 = pipe.with_overrides(
            ...     selector=Component(name="fixed", options={"k": 3}))    # doctest: +SKIP
        """
        update: dict[str, Any] = {}
        if selector is not None:
            update["selector"] = selector
        if k is not None:
            if k <= 0:
                raise UsageError(f"k must be positive, got {k}")
            update["retrieval"] = self.config.retrieval.model_copy(update={"k": k})
        clone = copy.copy(self)
        clone.config = self.config.model_copy(update=update)
        clone._generator = generator if generator is not None else self._generator
        if self._flow is not None:
            clone._flow = self._flow.derive(clone.config, keep_selector=selector is None)
        return clone

    @property
    def flow(self) -> RetrievalFlow:
        """The retrieval flow (the same one ``mmedrag search`` and ``/v1/search`` run)."""
        if self._flow is None:
            raise UsageError("this pipeline has no index: pass index=... or answer with "
                             "use_rag=False")
        return self._flow

    # -- retrieval ---------------------------------------------------------------------------
    def retrieve(self, question: str = "", image: Any = None, k: int | None = None,
                 filters: dict[str, Any] | None = None, exclude_ids: set[str] | None = None,
                 ) -> RetrievalResult:
        """Route, retrieve, fuse, rerank and select (see :meth:`RetrievalFlow.run`).

        Args:
            question: query text (may be empty for image-only retrieval).
            image: query image (path, bytes or PIL image) or None.
            k: candidates to retrieve before selection (default ``config.retrieval.k``).
            filters: store filters (field → value or list of values), e.g. ``{"split": "train"}``.
            exclude_ids: record ids never to return (e.g. the query's own pair in evaluations).
        """
        return self.flow.run(question, image, k, filters, exclude_ids,
                             generator=lambda: self.generator)

    # -- answering ---------------------------------------------------------------------------
    def answer(self, question: str, image: Any = None, task: str = "open_vqa",
               options: dict[str, str] | None = None, use_rag: bool = True,
               retrieval_image: Any = None, evidence: list[Hit] | None = None,
               params: GenerationParams | None = None, filters: dict[str, Any] | None = None,
               exclude_ids: set[str] | None = None) -> Answer:
        """Answer ``question`` (about ``image`` if given) for ``task``.

        Args:
            question: the question (for "report", e.g. "Describe the findings").
            image: what the generator sees (path, bytes or PIL image).
            task: closed_vqa | open_vqa | report | mcq | mcq_voc | longform.
            options: letter → text for mcq / mcq_voc.
            use_rag: False skips retrieval entirely.
            retrieval_image: image used for retrieval (default ``image``); lets experiments
                retrieve with one image while the model sees another (RAG-PT noise images).
            evidence: use these hits as evidence and skip retrieval.
            params: generation parameters (defaults per task).
            filters: retrieval store filters; exclude_ids: record ids never used as evidence.
        """
        turn = Turn.start(question, task, options, image)
        image = _load(image, "image")
        retrieval_image = image if retrieval_image is None else _load(retrieval_image,
                                                                      "retrieval image")
        # A report request is an instruction, not a query: reports are retrieved by the image.
        query = "" if task == "report" and retrieval_image is not None else turn.question
        found = self._evidence(query, retrieval_image, use_rag, evidence, filters, exclude_ids)
        turn.trace.extend(found.trace)
        turn.seconds.update(found.seconds)
        result = self.generate(turn, image, found.hits, params)
        return self.finish(turn, result, found, used_rag=use_rag)

    def _evidence(self, question: str, image: Any, use_rag: bool, evidence: list[Hit] | None,
                  filters: dict[str, Any] | None, exclude_ids: set[str] | None,
                  ) -> RetrievalResult:
        if evidence is not None:
            selection = Selection(hits=list(evidence), k=len(evidence),
                                  reason=f"{len(evidence)} evidence item(s) given by the caller")
            return RetrievalResult(list(evidence), selection, Route(None), [], {},
                                   ["evidence given by the caller; no retrieval"])
        if not use_rag:
            return RetrievalResult([], None, Route(None), [], {}, ["retrieval off (use_rag=False)"])
        return self.retrieve(question, image, None, filters, exclude_ids)

    def generate(self, turn: Turn, image: Any, hits: list[Hit],
                 params: GenerationParams | None, want_confidence: bool = False) -> Generated:
        """Build the prompt for ``hits`` (fitted to the context window) and generate."""
        generator, trace = self.generator, turn.trace
        params = params or GenerationParams(max_tokens=_MAX_TOKENS[turn.task])
        sees = bool(getattr(generator, "sees_images", False)) and image is not None
        mode = "seen" if sees else ("not_seen" if image is not None else "none")
        hits, messages = self._fit(generator, turn, hits, mode, params)
        if want_confidence or turn.task == "closed_vqa":
            params = dataclasses.replace(params, logprobs=True)
        start = time.perf_counter()
        generation = generator.generate(messages, [image] if sees else None, params)
        turn.seconds["generate"] = time.perf_counter() - start
        model = generation.model or getattr(generator, "name", "the generator")
        if image is not None and not sees:
            note = f"the image itself was not seen by {model}"
            note += "; it reached the model only through the retrieved evidence" if hits else ""
            if note not in trace:
                trace.append(note)
        return Generated(generation, messages, sees, hits)

    def _fit(self, generator: Any, turn: Turn, hits: list[Hit], mode: str,
             params: GenerationParams) -> tuple[list[Hit], list[dict[str, Any]]]:
        """Messages for ``hits``, dropping the last evidence items while the prompt is too long
        for the generator's context window (generators that say so through ``fits``)."""
        fits = getattr(generator, "fits", None)
        kept = list(hits)
        while True:
            messages = build_messages(turn.task, turn.question, kept, turn.options, image=mode,
                                      version=self.config.prompt_version,
                                      evidence_chars=self.evidence_chars)
            if fits is None or not kept or fits(messages, params.max_tokens):
                break
            kept.pop()
        if len(kept) < len(hits):
            turn.trace.append(f"dropped {len(hits) - len(kept)} evidence item(s) to fit the "
                         f"context window of {getattr(generator, 'name', 'the generator')}")
        return kept, messages

    def finish(self, turn: Turn, result: Generated, found: RetrievalResult,
               used_rag: bool) -> Answer:
        """The Answer: parsed, evidence numbered and marked cited, trace, tokens and seconds."""
        generation, hits = result.generation, result.hits
        trace, seconds, task = turn.trace, turn.seconds, turn.task
        cited = set(parse_citations(generation.text))
        evidence = [Evidence(number=n, hit=hit, cited=n in cited)
                    for n, hit in enumerate(hits, start=1)]
        unknown = sorted(c for c in cited if c < 1 or c > len(hits))
        if unknown:
            trace.append(f"the answer cites evidence that does not exist: {unknown}")
        for stage in ("route", "retrieve", "rerank", "select", "generate"):
            seconds.setdefault(stage, 0.0)
        seconds["total"] = time.perf_counter() - turn.started
        trace.append(f"prompt {self.config.prompt_version}/{task}; generated by "
                     f"{generation.model or getattr(self.generator, 'name', '?')}: "
                     f"{generation.tokens_in} tokens in, {generation.tokens_out} out")
        parsed, warnings = _parse(task, generation, turn.options, trace)
        return Answer(question=turn.question, text=generation.text.strip(),
                      parsed=parsed, evidence=evidence, domain=found.domain,
                      selection=found.selection.to_dict() if found.selection else {},
                      trace=trace, tokens_in=generation.tokens_in,
                      tokens_out=generation.tokens_out,
                      seconds={k: round(v, 4) for k, v in seconds.items()},
                      image_seen=result.sees, yes_probability=generation.yes_probability,
                      messages=result.messages, used_rag=used_rag, warnings=warnings,
                      route=found.route.to_dict())


@dataclass
class Turn:
    """One answer in the making: what was asked, and the trace and seconds so far."""

    question: str
    task: str
    options: dict[str, str] | None
    started: float
    trace: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, question: str, task: str, options: dict[str, str] | None,
              image: Any) -> Turn:
        """Check the task and question (an empty report request gets the default wording)."""
        check_task(task)
        return cls(_question(question, task, image), task, options, time.perf_counter())


@dataclass
class Generated:
    """One generation with the messages it was given and the evidence that fitted."""

    generation: Generation
    messages: list[dict[str, Any]]
    sees: bool
    hits: list[Hit]


def _question(question: str, task: str, image: Any) -> str:
    if question.strip():
        return question
    if task != "report" or image is None:
        raise UsageError("the question is empty")
    return "Write the radiology report for this image."


def _parse(task: str, generation: Generation, options: dict[str, str] | None,
           trace: list[str]) -> tuple[str | None, list[str]]:
    """The parsed answer, and warnings when a closed answer's text contradicts it."""
    parsed = parse_answer(task, generation.text, options)
    warnings: list[str] = []
    if parsed is None and task == "closed_vqa" and generation.yes_probability is not None:
        parsed = "yes" if generation.yes_probability >= 0.5 else "no"
        trace.append(f"no yes/no in the answer text: parsed from P(yes)="
                     f"{generation.yes_probability:.2f} at the first token")
        lean = closed_text_polarity(generation.text)
        if lean is not None and lean != parsed:
            warnings.append(f"the answer text reads as '{lean}' but the parsed answer (from "
                            f"P(yes)={generation.yes_probability:.2f}) is '{parsed}'")
            trace.append(f"warning: {warnings[-1]}")
    return parsed, warnings


def _load(image: Any, what: str) -> Any:
    if image is None:
        return None
    from mmedrag.ingest.images import load_image

    return load_image(image, what=str(image) if isinstance(image, (str, Path)) else what)


__all__ = ["Generated", "Pipeline", "Turn"]
