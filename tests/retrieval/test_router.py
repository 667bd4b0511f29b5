"""The domain router: trains on the packaged sample, routes it, falls back under the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.errors import UsageError
from mmedrag.ingest.labelled import read_rows
from mmedrag.retrieval.router import DomainRouter, RouteDecision
from mmedrag.training.domain import train_domain


@pytest.fixture(scope="module")
def sample_router(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("router")
    report = train_domain([sample_dir / "pairs.jsonl"], out, field="domain", val_fraction=0.3)
    return out, report


def test_router_routes_the_packaged_sample(sample_router: tuple[Path, dict],
                                           sample_dir: Path) -> None:
    path, report = sample_router
    assert report["labels"] == ["ABD", "CHEST", "HEAD"]
    assert report["train"] + report["validation"] == 36
    router = DomainRouter.load(path, threshold=0.0)
    rows = read_rows(sample_dir / "pairs.jsonl", label_field="domain")
    decisions = router.route_many([r.image for r in rows])
    accuracy = sum(d.domain == r.label for d, r in zip(decisions, rows, strict=True)) / len(rows)
    assert accuracy >= 0.8  # 27 of the 36 were training images; chance is about 0.33
    first = decisions[0]
    assert isinstance(first, RouteDecision) and not first.searched_all
    assert set(first.probabilities) == {"ABD", "CHEST", "HEAD"}
    assert sum(first.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert first.probability == pytest.approx(max(first.probabilities.values()), abs=1e-4)


def test_below_threshold_searches_all_domains(sample_router: tuple[Path, dict],
                                              sample_dir: Path) -> None:
    router = DomainRouter.load(sample_router[0], threshold=1.0)
    decision = router.route(sample_dir / "images" / "synpic19605.jpg")
    assert decision.domain is None and decision.searched_all
    assert "searching all domains" in decision.reason and decision.probability < 1.0


def test_saved_threshold_is_used_unless_overridden(sample_router: tuple[Path, dict]) -> None:
    meta = json.loads((sample_router[0] / "router.json").read_text())
    assert DomainRouter.load(sample_router[0]).threshold == meta["threshold"] == 0.5
    with pytest.raises(UsageError):
        DomainRouter.load(sample_router[0], threshold=1.5)
    with pytest.raises(UsageError, match="not a domain router"):
        DomainRouter.load(sample_router[0] / "missing")


def test_flow_reads_the_registered_router(sample_router: tuple[Path, dict],
                                          tmp_path: Path) -> None:
    from mmedrag.config import Component, Config, IndexConfig
    from mmedrag.index import Index
    from mmedrag.retrieval.flow import RetrievalFlow

    index = Index.open(tmp_path / "idx", create=True,
                       config=IndexConfig(text_encoder=Component(name="hashing")))
    assert RetrievalFlow(Config(), index).router() is None
    # an index written before the typed artefacts: the legacy "extras" entry still loads
    index.meta["extras"] = {"router": {"path": str(sample_router[0]), "threshold": 0.9,
                                       "field": "domain"}}
    index.meta.pop("artefacts")
    index.save_meta()
    router = RetrievalFlow(Config(), Index.open(tmp_path / "idx")).router()
    assert isinstance(router, DomainRouter) and router.threshold == 0.9
    assert router.threshold_source == "registered with the index"
    cfg = Config.model_validate({"retrieval": {"router_threshold": 0.3}})
    assert RetrievalFlow(cfg, Index.open(tmp_path / "idx")).router().threshold == 0.3


def test_cli_trains_reports_and_registers(sample_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from mmedrag.cli.main import main
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index

    Index.open(tmp_path / "idx", create=True,
               config=IndexConfig(text_encoder=Component(name="hashing")))
    code = main(["train", "domain", str(sample_dir / "pairs.jsonl"), "--out", str(tmp_path / "r"),
                 "--val-fraction", "0.3", "--threshold", "0.4", "--index", str(tmp_path / "idx"),
                 "--features", "handcrafted+cnn", "--cnn-epochs", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["confusion"]) == 3 and report["features"] == "handcrafted+cnn"
    assert (tmp_path / "r" / "cnn.pt").exists()
    assert sum(map(sum, report["confusion"])) == report["validation"]
    registered = Index.open(tmp_path / "idx").artefacts.router
    assert registered.path == str((tmp_path / "r").resolve()) and registered.threshold is None
    assert DomainRouter.load(registered.path).threshold == 0.4
    code = main(["train", "domain", str(sample_dir / "pairs.jsonl"), "--out", str(tmp_path / "r2"),
                 "--field", "nope"])
    assert code == 1
    assert "[nope]" in capsys.readouterr().err
