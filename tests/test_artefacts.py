"""Typed index artefacts, and indexes / routers / towers saved before the redesign still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.artefacts import IndexArtefacts, RouterArtefact, TowerArtefact
from mmedrag.errors import MmedragError


def test_legacy_extras_become_typed_artefacts() -> None:
    meta = {"extras": {"router": {"path": "r", "threshold": 0.7, "field": "modality"},
                       "image_text": {"path": "t", "domain": None},
                       "calibration": {"k": 3}, "kg": "kg.sqlite"}}
    art = IndexArtefacts.from_meta(meta)
    assert art.router == RouterArtefact(path="r", threshold=0.7)
    assert art.towers == [TowerArtefact(path="t")] and art.calibration == {"k": 3}
    assert art.kg == "kg.sqlite" and art.version == 1
    assert IndexArtefacts.from_meta({}) == IndexArtefacts()


def test_towers_per_domain_and_for_all() -> None:
    art = IndexArtefacts().with_tower(TowerArtefact(path="all"))
    art = art.with_tower(TowerArtefact(path="ct", domain="CT"))
    art = art.with_tower(TowerArtefact(path="ct2", domain="CT"))  # replaces the CT tower
    assert [t.path for t in art.towers] == ["all", "ct2"]
    assert art.tower_for("CT").path == "ct2" and art.tower_for("MR").path == "all"
    assert art.tower_for(None).path == "all"
    assert IndexArtefacts(towers=[TowerArtefact(path="ct", domain="CT")]).tower_for("MR") is None


def test_bad_or_newer_artefacts_are_one_clear_error() -> None:
    with pytest.raises(MmedragError, match="artefact field 'router.path'"):
        IndexArtefacts.from_meta({"artefacts": {"router": {"threshold": 0.5}}})
    with pytest.raises(MmedragError, match="newer than this mmedrag reads"):
        IndexArtefacts.from_meta({"artefacts": {"version": 99}})


def test_an_old_index_json_opens_and_is_rewritten_typed(tmp_path: Path) -> None:
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index

    index = Index.open(tmp_path / "idx", create=True,
                       config=IndexConfig(text_encoder=Component(name="hashing"),
                                          image_encoder=None))
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    meta.pop("artefacts")
    meta["extras"] = {"image_text": {"path": "towers/ct", "domain": "CT"}}
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    old = Index.open(tmp_path / "idx")
    assert old.artefacts.tower_for("CT").path == "towers/ct"
    assert old.info()["artefacts"]["towers"][0]["domain"] == "CT"
    old.set_artefacts(old.artefacts.model_copy(update={"kg": "kg.sqlite"}))
    saved = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert "extras" not in saved and saved["artefacts"]["towers"][0]["path"] == "towers/ct"
    assert saved["artefacts"]["kg"] == "kg.sqlite"
    index.close()


def test_old_router_feature_names_load_in_todays_names(sample_dir: Path, tmp_path: Path) -> None:
    from mmedrag.retrieval.router import DomainRouter, current_feature_spec
    from mmedrag.training.domain import train_domain

    assert current_feature_spec("handcrafted+tower:models/t", 1) == \
        "handcrafted+tower-trunk:models/t"
    assert current_feature_spec("handcrafted+tower:models/t", 2) == "handcrafted+tower:models/t"
    train_domain([sample_dir / "pairs.jsonl"], tmp_path / "r", field="domain",
                 features="handcrafted", val_fraction=0.3)
    saved = json.loads((tmp_path / "r" / "router.json").read_text())
    assert saved["feature_names"] == 2
    saved.pop("feature_names")  # as a router written before the redesign
    (tmp_path / "r" / "router.json").write_text(json.dumps(saved))
    router = DomainRouter.load(tmp_path / "r")
    assert router.features == "handcrafted"
    decision = router.route(sample_dir / "images" / "synpic19605.jpg")
    assert decision.domain in ("ABD", "CHEST", "HEAD")
