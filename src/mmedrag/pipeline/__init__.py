"""The pipeline layer: :class:`Pipeline` (one straight line from question to cited answer) and
:class:`RetrieveOnDemand` (Self-BioRAG's judge around it); :func:`build` picks from a config.

Example:
    >>> from mmedrag.config import Config, Component
    >>> type(build(Config(generator=Component(name="echo")), index=None)).__name__
    'Pipeline'
    >>> cfg = Config(generator=Component(name="echo"), retrieve_on_demand=0.8)
    >>> type(build(cfg, index=None)).__name__
    'RetrieveOnDemand'
"""

from __future__ import annotations

from pathlib import Path

from mmedrag.config import Config
from mmedrag.pipeline.core import Generated, Pipeline
from mmedrag.pipeline.on_demand import RetrieveOnDemand
from mmedrag.retrieval.flow import RetrievalFlow
from mmedrag.retrieval.protocol import SearchableIndex

Answerer = Pipeline | RetrieveOnDemand


def build(config: Config | str | Path | None = None,
          index: str | Path | SearchableIndex | None = None,
          flow: RetrievalFlow | None = None) -> Answerer:
    """The answering component a config describes: the pipeline (sharing ``flow`` when given),
    wrapped in :class:`RetrieveOnDemand` when ``retrieve_on_demand`` is set."""
    cfg = config if isinstance(config, Config) else (
        Config.from_yaml(config) if config is not None else Config())
    threshold = cfg.retrieve_on_demand
    if threshold is None:
        return Pipeline.from_config(cfg, index, flow)
    inner = cfg.model_copy(update={"retrieve_on_demand": None})
    shared = flow.derive(inner, keep_selector=True) if flow is not None else None
    return RetrieveOnDemand(Pipeline.from_config(inner, index, shared), threshold)


__all__ = ["Answerer", "Generated", "Pipeline", "RetrieveOnDemand", "build"]
