"""Typed configuration (pydantic), YAML in and out.

Every component is named by registry key plus its keyword options. Secrets never live in the
config: a config names the *environment variable* that holds them (``api_key_env``).

Example:
    >>> cfg = Config.model_validate({"generator": {"name": "llama-cpp"}})
    >>> cfg.selector.name
    'gap'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmedrag.errors import UsageError

_SECRET_KEYS = ("api_key", "token", "password", "secret")


class Component(BaseModel):
    """A registry key plus options passed to the component's constructor."""

    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if key.lower() in _SECRET_KEYS and item:
                raise ValueError(
                    f"option {key!r} holds a secret: put it in an environment variable and set "
                    f"'{key}_env: VAR_NAME' instead")
        return value


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text_encoder: Component = Component(name="sentence-transformers")
    # image→image search: frozen ImageNet EfficientNet-Lite0 (MedPix similar-modality P@5 0.916
    # against 0.714 for the weight-free "thumbnail", which indexes ~100× faster)
    image_encoder: Component | None = Component(name="imagenet")
    store: Component = Component(name="embedded")
    bm25: bool = True
    chunk_tokens: int = 100
    chunk_overlap: int = 20


class RetrievalConfig(BaseModel):
    """What the one retrieval flow does (``mmedrag.retrieval.flow``); every field is read there.

    ``router`` / ``image_text`` name a trained router / tower folder that overrides the one
    registered with the index; ``router_threshold`` overrides the threshold saved with the router
    (None keeps it; the trace says which applied).
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    k: int = Field(default=10, ge=1)
    router: str | None = None
    router_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    image_text: str | None = None
    kg: Component | None = None
    hyde: bool = False


class Config(BaseModel):
    """The whole pipeline: index, retrieval, rerank, selection, generation, evaluation prices."""

    model_config = ConfigDict(extra="forbid")
    index: IndexConfig = IndexConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    reranker: Component = Component(name="none")
    selector: Component = Component(name="gap", options={"gamma": 0.05, "k_min": 1, "k_max": 5})
    generator: Component = Component(name="llama-cpp")
    prompt_version: str = "v1"
    retrieve_on_demand: float | None = None
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        """Load a YAML file; errors name the file and the offending field."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise UsageError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"{path}: field '{loc}': {first['msg']}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def resolve_secret(options: dict[str, Any], key: str) -> str | None:
    """Read ``<key>_env`` from options and return that environment variable's value."""
    env_name = options.get(f"{key}_env")
    if not env_name:
        return None
    value = os.environ.get(str(env_name))
    if value is None:
        raise UsageError(f"environment variable {env_name} (named by option '{key}_env') is not set")
    return value
