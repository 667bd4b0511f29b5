"""One retrieval path: ``mmedrag search``, ``POST /v1/search`` and the pipeline's retrieval stage
rank the same candidates in the same order for the same image and question, with the index's
domain router and trained tower in use (on the packaged sample, and on shared MedPix dev)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmedrag.config import Component, Config


def _cli_search(index: Path, image: Path, question: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "mmedrag", "search", "--index", str(index),
                          "--image", str(image), "--text", question, "--json"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _rest_search(client: Any, image: Path, question: str) -> dict[str, Any]:
    body = {"text": question, "image_b64": base64.b64encode(image.read_bytes()).decode()}
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_one_path(index_dir: Path, cases: list[tuple[Path, str]], start_live: Any) -> list[str]:
    """Search by CLI, REST and the pipeline for each (image, question); same ids, same order.
    Returns the route domains seen."""
    from mmedrag.pipeline import build

    config = Config(generator=Component(name="echo"))
    pipeline = build(config, index_dir)
    domains = []
    with start_live(index_dir, config, None) as server, server.client() as client:
        for image, question in cases:
            stage = pipeline.retrieve(question, image)
            expected = [h.id for h in stage.candidates]
            assert expected, f"no candidates for {image}"
            cli = _cli_search(index_dir, image, question)
            rest = _rest_search(client, image, question)
            assert [h["id"] for h in cli["hits"]] == expected, image
            assert [h["id"] for h in rest["hits"]] == expected, image
            for shown in (cli, rest):
                assert "image-text" in shown["retrievers"]
                assert shown["route"]["domain"] == stage.route.to_dict()["domain"]
            domains.append(stage.route.to_dict()["domain"])
            answer = pipeline.answer(question, image=image, task="open_vqa")
            assert [e.hit.id for e in answer.evidence] == [h.id for h in stage.hits]
    return domains


@pytest.fixture(scope="module")
def routed_tower_index(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged sample indexed, with a router and a tower trained and registered by CLI."""
    from mmedrag.cli.main import main

    folder = tmp_path_factory.mktemp("onepath")
    index = folder / "index"
    config = folder / "cfg.yaml"
    config.write_text("index:\n  text_encoder: {name: hashing}\n"
                      "  image_encoder: {name: thumbnail}\n")
    pairs = str(sample_dir / "pairs.jsonl")
    assert main(["index", pairs, "--index", str(index), "--config", str(config), "--json"]) == 0
    assert main(["train", "domain", pairs, "--out", str(folder / "router"), "--index", str(index),
                 "--features", "handcrafted", "--val-fraction", "0.3", "--json"]) == 0
    assert main(["train", "retriever", pairs, "--out", str(folder / "tower"), "--index",
                 str(index), "--epochs", "1", "--size", "32", "--batch-size", "12",
                 "--aux-fields", "", "--extra-features", "none", "--json"]) == 0
    return index


def test_search_rest_and_pipeline_rank_alike_on_the_sample(routed_tower_index: Path,
                                                           sample_dir: Path,
                                                           start_live: Any) -> None:
    rows = [json.loads(line) for line in (sample_dir / "pairs.jsonl").read_text().splitlines()]
    cases = [(sample_dir / r["image"], "Is there an abnormality?") for r in rows[::7]]
    domains = assert_one_path(routed_tower_index, cases, start_live)
    assert set(domains) <= {"ABD", "CHEST", "HEAD", None} and any(domains)


@pytest.mark.slow
@pytest.mark.data
def test_search_rest_and_pipeline_rank_alike_on_medpix_dev(shared_data: Path, tmp_path: Path,
                                                           start_live: Any) -> None:
    """20 MedPix dev images with questions; router and tower trained on MedPix train rows."""
    from mmedrag.cli.main import main

    medpix = shared_data / "medpix"
    rows = [json.loads(line) for line in (medpix / "pairs.jsonl").read_text().splitlines()]
    for row in rows:
        row["image"] = str(medpix / row["image"])
    dev = [r for r in rows if r["split"] == "dev"]
    train = [r for r in rows if r["split"] == "train"]
    subset = [r for r in train if r["modality"] == "CT"][:150] + \
        [r for r in train if r["modality"] == "MR"][:150]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in subset))
    index = tmp_path / "index"
    # the manifest lives in tmp_path and names the shared images: allowed explicitly
    assert main(["index", str(tmp_path / "dev.jsonl"), "--index", str(index), "--text-field",
                 "caption", "--domain-field", "modality", "--allow-outside", str(medpix),
                 "--on-error", "fail", "--json"]) == 0
    assert main(["train", "domain", str(tmp_path / "train.jsonl"), "--field", "modality",
                 "--out", str(tmp_path / "router"), "--index", str(index), "--features",
                 "handcrafted", "--json"]) == 0
    assert main(["train", "retriever", str(tmp_path / "train.jsonl"), "--out",
                 str(tmp_path / "tower"), "--index", str(index), "--text-field", "caption",
                 "--domain-field", "modality", "--epochs", "2", "--size", "48",
                 "--extra-features", "none", "--json"]) == 0
    cases = [(Path(r["image"]), f"What does this {r['modality']} of the {r['location']} show?")
             for r in dev[::10][:20]]
    domains = assert_one_path(index, cases, start_live)
    from mmedrag.index import Index

    assert Index.open(index).count() == 197
    assert len(domains) == 20 and set(domains) <= {"CT", "MR", None}


def test_the_routed_domain_gets_its_own_tower(routed_tower_index: Path, sample_dir: Path,
                                               tmp_path: Path) -> None:
    """Per-domain retrieval: a tower registered for a domain serves the images routed there; the
    tower for all domains serves the rest."""
    from mmedrag.artefacts import TowerArtefact
    from mmedrag.index import Index
    from mmedrag.pipeline import build

    index = Index.open(routed_tower_index)
    saved = index.artefacts
    general = saved.towers[0].path
    pipeline = build(Config(generator=Component(name="echo")), index)
    rows = [json.loads(line) for line in (sample_dir / "pairs.jsonl").read_text().splitlines()]
    routed = {}
    for row in rows:
        found = pipeline.retrieve("", sample_dir / row["image"])
        routed.setdefault(found.domain, sample_dir / row["image"])
    domain = next(d for d in routed if d is not None)
    try:
        index.set_artefacts(saved.with_tower(TowerArtefact(path=general, domain=domain)))
        pipeline = build(Config(generator=Component(name="echo")), Index.open(routed_tower_index))
        own = pipeline.retrieve("", routed[domain])
        assert f"image→report search with the {domain} tower" in own.trace
        assert own.retrievers == ["image-text"] and own.domain == domain
        others = [d for d in routed if d not in (domain, None)]
        if others:
            other = pipeline.retrieve("", routed[others[0]])
            assert "image→report search with the tower for all domains" in other.trace
    finally:
        index.set_artefacts(saved)


def test_review_fixes_one_path_with_hyde_on_demand_and_a_fixed_domain(
        routed_tower_index: Path, sample_dir: Path) -> None:
    """HyDE in search uses the config's generator (same ranking as ask); the server's shared flow
    also serves RetrieveOnDemand; a domain the caller fixes is never overridden by the router;
    the selected evidence is numbered 1..k."""
    from mmedrag.index import Index
    from mmedrag.pipeline import build
    from mmedrag.retrieval.flow import RetrievalFlow
    from mmedrag.server.service import Service

    image = sample_dir / "images" / "synpic19605.jpg"
    hyde = Config.model_validate({"generator": {"name": "echo"}, "retrieval": {"hyde": True}})
    index = Index.open(routed_tower_index)
    searched = RetrievalFlow(hyde, index).run("Is the spleen enlarged?", image, select=False)
    asked = build(hyde, index).retrieve("Is the spleen enlarged?", image)
    assert [h.id for h in searched.candidates] == [h.id for h in asked.candidates]
    assert any(line.startswith("HyDE:") for line in searched.trace)
    assert [h.rank for h in asked.hits] == list(range(1, len(asked.hits) + 1))

    on_demand = Config(generator=Component(name="echo"), retrieve_on_demand=0.0)
    service = Service(Index.open(routed_tower_index), on_demand)
    answer = service.answer("Is the spleen enlarged?", image=image, task="closed_vqa")
    assert answer["used_rag"] is False

    plain = RetrievalFlow(Config(generator=Component(name="echo")), index)
    routed = plain.run("", image, select=False).domain
    other = next(d for d in ("ABD", "CHEST", "HEAD") if d != routed)
    fixed = plain.run("", image, filters={"domain": other}, select=False)
    assert fixed.domain == other and {h.record.domain for h in fixed.candidates} == {other}
    assert f"domain {other} fixed by the caller: no routing" in fixed.trace
