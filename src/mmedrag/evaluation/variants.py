"""Pipeline variants for ablations: ``rag``, ``no-rag``, ``fixed-K``, ``adaptive``, ``calibrated``.

Example:
    >>> [v.name for v in parse_variants("no-rag,fixed-3,adaptive")]
    ['no-rag', 'fixed-3', 'adaptive']
    >>> parse_variants("fixed-3")[0].selector.options
    {'k': 3}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mmedrag.config import Component
from mmedrag.errors import UsageError

_FIXED = re.compile(r"^(?:fixed-|k=?)(\d+)$")


@dataclass(frozen=True)
class Variant:
    """One pipeline setting: whether it retrieves, and which selector it uses.

    Example:
        >>> Variant("no-rag", use_rag=False).to_dict()["use_rag"]
        False
    """

    name: str
    use_rag: bool = True
    selector: Component | None = None
    fixed_k: int | None = None

    def build(self, pipeline: Any, generator: Any = None) -> Any:
        """The pipeline with this variant's overrides (sharing index, encoders, generator)."""
        return pipeline.with_overrides(selector=self.selector, generator=generator)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "use_rag": self.use_rag, "fixed_k": self.fixed_k,
                "selector": self.selector.model_dump() if self.selector else None}


def parse_variant(name: str, adaptive: Component | None = None) -> Variant:
    """A variant from its name (``rag`` keeps the config's selector)."""
    name = name.strip()
    if name in ("rag", "config"):
        return Variant("rag")
    if name in ("no-rag", "norag", "none"):
        return Variant("no-rag", use_rag=False)
    if name == "adaptive":
        return Variant("adaptive", selector=adaptive or Component(
            name="gap", options={"gamma": 0.05, "k_min": 1, "k_max": 5}))
    if name == "calibrated":
        return Variant("calibrated", selector=Component(name="calibrated"))
    found = _FIXED.match(name)
    if found:
        k = int(found.group(1))
        if k < 1:
            raise UsageError(f"ablation {name!r}: k must be at least 1")
        return Variant(f"fixed-{k}", selector=Component(name="fixed", options={"k": k}), fixed_k=k)
    raise UsageError(f"unknown ablation {name!r}; use rag, no-rag, fixed-K, adaptive, calibrated")


def parse_variants(spec: str | None, no_rag: bool = False, calibration_ks: str | None = None,
                   adaptive: Component | None = None) -> list[Variant]:
    """Variants from ``--ablation``, ``--no-rag`` and ``--calibration-ks`` (deduplicated)."""
    names = [p for p in (spec or "").split(",") if p.strip()]
    if no_rag and not names:
        names = ["no-rag"]
    for k in (calibration_ks or "").split(","):
        if k.strip():
            if not k.strip().isdigit():
                raise UsageError(f"--calibration-ks: {k!r} is not a positive integer")
            names.append(f"fixed-{int(k)}")
    variants = [parse_variant(n, adaptive) for n in names] or [Variant("rag")]
    return list({v.name: v for v in variants}.values())
