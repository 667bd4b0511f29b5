"""Typed, versioned artefacts an index carries: its domain router, its image→report towers, its
calibration (RULE) and its knowledge graph.

They live in ``index.json`` under ``"artefacts"``. Indexes written before this model kept the
same things as untyped ``"extras"`` keys; :meth:`IndexArtefacts.from_meta` reads both.

Example:
    >>> art = IndexArtefacts.from_meta({"extras": {"image_text": {"path": "t", "domain": None}}})
    >>> art.towers[0].path, art.version
    ('t', 1)
    >>> art.tower_for("CT").path
    't'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmedrag.errors import MmedragError

ARTEFACTS_VERSION = 1


class RouterArtefact(BaseModel):
    """A trained domain router folder; ``threshold`` None keeps the one saved with it."""

    model_config = ConfigDict(extra="ignore")  # legacy entries also named the field
    path: str
    threshold: float | None = None


class TowerArtefact(BaseModel):
    """A trained image→report retriever folder; ``domain`` None serves every domain.

    ``kind`` ``tower``: the project's tower, aligned to the index's text encoder (its text store
    serves it). ``dual``: a fine-tuned CLIP-family dual encoder with its own text tower; the
    index's record texts embedded by that text tower live in ``text_store`` (a store folder
    relative to the index, built at registration and kept in step with the index's records).
    """

    model_config = ConfigDict(extra="forbid")
    path: str
    domain: str | None = None
    kind: Literal["tower", "dual"] = "tower"
    text_store: str | None = None


class IndexArtefacts(BaseModel):
    """Everything trained for an index, by role."""

    model_config = ConfigDict(extra="forbid")
    version: int = ARTEFACTS_VERSION
    router: RouterArtefact | None = None
    towers: list[TowerArtefact] = Field(default_factory=list)
    calibration: dict[str, Any] | None = None
    kg: str | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> IndexArtefacts:
        """Read ``meta["artefacts"]``, or the legacy ``meta["extras"]`` keys."""
        try:
            if "artefacts" in meta:
                found = cls.model_validate(meta["artefacts"])
                if found.version > ARTEFACTS_VERSION:
                    raise MmedragError(f"index artefacts version {found.version} is newer than "
                                       f"this mmedrag reads ({ARTEFACTS_VERSION})")
                return found
            extras = meta.get("extras") or {}
            tower = extras.get("image_text")
            return cls(router=RouterArtefact.model_validate(extras["router"])
                       if extras.get("router") else None,
                       towers=[TowerArtefact.model_validate(tower)] if tower else [],
                       calibration=extras.get("calibration"), kg=extras.get("kg"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise MmedragError(f"index.json: artefact field '{where}': {first['msg']}") from None

    def with_tower(self, tower: TowerArtefact) -> IndexArtefacts:
        """A copy where ``tower`` replaces any tower registered for the same domain."""
        kept = [t for t in self.towers if t.domain != tower.domain]
        return self.model_copy(update={"towers": [*kept, tower]})

    def tower_for(self, domain: str | None) -> TowerArtefact | None:
        """The tower of ``domain``, else the tower for every domain, else None."""
        by_domain = {t.domain: t for t in self.towers}
        return by_domain.get(domain) if domain in by_domain else by_domain.get(None)


__all__ = ["IndexArtefacts", "RouterArtefact", "TowerArtefact"]
