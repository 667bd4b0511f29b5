"""Retrieve only when needed (Self-BioRAG): answer without retrieval first, and retrieve when the
model's own confidence is below a threshold.

Like FlashRAG's judger between pipelines, this component wraps :class:`Pipeline` and decides per
question which path to take; ``Pipeline.answer`` itself always does the same straight line.

Example:
    >>> from mmedrag.config import Config, Component
    >>> pipe = Pipeline(Config(generator=Component(name="echo")), index=None)
    >>> judged = RetrieveOnDemand(pipe, threshold=0.0)
    >>> judged.answer("Is this normal?", task="closed_vqa").used_rag
    False
"""

from __future__ import annotations

import math
import time
from typing import Any

from mmedrag.config import Config
from mmedrag.errors import UsageError
from mmedrag.generation.protocol import GenerationParams
from mmedrag.pipeline.core import Pipeline, Turn, _load
from mmedrag.records import Answer, Generation, Hit
from mmedrag.retrieval.flow import RetrievalResult, Route


class RetrieveOnDemand:
    """Answers without retrieval when the generator is confident enough, else with it.

    Args:
        pipeline: the pipeline both paths run through.
        threshold: confidence in [0, 1] at or above which the no-retrieval answer stands
            (yes/no margin for closed questions, else the mean token probability).
    """

    def __init__(self, pipeline: Pipeline, threshold: float) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"retrieve_on_demand must be in [0, 1], got {threshold}")
        self.pipeline = pipeline
        self.threshold = threshold

    @property
    def config(self) -> Config:
        """The pipeline's config with this component's threshold (as the user wrote it)."""
        return self.pipeline.config.model_copy(update={"retrieve_on_demand": self.threshold})

    def __getattr__(self, name: str) -> Any:  # generator, retrieve, flow, index, ...
        return getattr(self.pipeline, name)

    def with_overrides(self, **overrides: Any) -> RetrieveOnDemand:
        return RetrieveOnDemand(self.pipeline.with_overrides(**overrides), self.threshold)

    def answer(self, question: str, image: Any = None, task: str = "open_vqa",
               options: dict[str, str] | None = None, use_rag: bool = True,
               retrieval_image: Any = None, evidence: list[Hit] | None = None,
               params: GenerationParams | None = None, filters: dict[str, Any] | None = None,
               exclude_ids: set[str] | None = None) -> Answer:
        """As :meth:`Pipeline.answer`, retrieving only when the first answer is unsure."""
        if not use_rag or evidence is not None:
            return self.pipeline.answer(question, image, task, options, use_rag,
                                        retrieval_image, evidence, params, filters, exclude_ids)
        turn = Turn.start(question, task, options, image)
        first = self.pipeline.generate(turn, _load(image, "image"), [], params,
                                       want_confidence=True)
        confidence = _confidence(first.generation, task)
        if confidence >= self.threshold:
            turn.trace.append(f"retrieve-on-demand: answered without retrieval (confidence "
                              f"{confidence:.2f} >= threshold {self.threshold:.2f})")
            nothing = RetrievalResult([], None, Route(None), [], {}, [])
            return self.pipeline.finish(turn, first, nothing, used_rag=False)
        answer = self.pipeline.answer(question, image, task, options, True, retrieval_image,
                                      None, params, filters, exclude_ids)
        answer.trace.insert(0, f"retrieve-on-demand: confidence {confidence:.2f} < threshold "
                               f"{self.threshold:.2f}, so evidence was retrieved")
        answer.seconds["generate_without_retrieval"] = round(turn.seconds["generate"], 4)
        answer.seconds["total"] = round(time.perf_counter() - turn.started, 4)
        return answer


def _confidence(generation: Generation, task: str) -> float:
    """Self-assessed confidence: yes/no margin for closed questions, else mean token probability."""
    if task == "closed_vqa" and generation.yes_probability is not None:
        return max(generation.yes_probability, 1.0 - generation.yes_probability)
    if generation.logprobs:
        return math.exp(sum(generation.logprobs) / len(generation.logprobs))
    return 0.0
