"""Every configuration field changes behaviour (or is refused with a clear message).

The test walks every field of :class:`Config` (nested models field by field; a component is one
field) and every example YAML. Each field has a probe: build the system the way a user does (the
``mmedrag index`` command for the index section; ``mmedrag.pipeline.build`` and its retrieval for
the rest) once with the default and once with a changed value, and compare what a user can see.
A field with no probe, or a probe that sees no difference, fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mmedrag.config import Component, Config
from mmedrag.errors import MmedragError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPLEEN_IMAGE = "images/synpic19605.jpg"
QUESTION = "Is the spleen normal size?"


def leaf_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every field; nested config sections are walked, components are leaves."""
    out = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind is not Component:
            out += leaf_fields(kind, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def set_fields(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """The leaf paths a YAML mapping sets."""
    out = []
    for name, value in data.items():
        kind = model.model_fields[name].annotation
        nested = isinstance(kind, type) and issubclass(kind, BaseModel) and kind is not Component
        out += set_fields(value, kind, f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return out


def with_value(cfg: Config, path: str, value: Any) -> Config:
    data = cfg.model_dump()
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return Config.model_validate(data)


# -- the system a probe builds -------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A hashing/thumbnail index of the packaged sample with nothing registered, plus a router,
    a tower and a KG trained or built beside it (for the fields that name them)."""
    from mmedrag.config import IndexConfig
    from mmedrag.encoders.text import HashingTextEncoder
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest
    from mmedrag.retrieval.kg_loaders import load_generic
    from mmedrag.retrieval.kg_store import KnowledgeGraph
    from mmedrag.training.contrastive import TowerTrainConfig
    from mmedrag.training.domain import train_domain
    from mmedrag.training.retriever import train_retriever

    folder = tmp_path_factory.mktemp("coverage")
    index = Index.open(folder / "index", create=True, config=IndexConfig(
        text_encoder=Component(name="hashing"), image_encoder=Component(name="thumbnail")))
    index.add(read_manifest(sample_dir / "pairs.jsonl").records)
    train_domain([sample_dir / "pairs.jsonl"], folder / "router", field="domain",
                 features="handcrafted", seed=0)
    train_retriever(sample_dir / "pairs.jsonl", folder / "tower", aux_fields=(),
                    config=TowerTrainConfig(size=32, width=8, batch_size=12, epochs=1,
                                            threads=1, extra_features=""),
                    text_encoder=HashingTextEncoder(), progress=False)
    triples = folder / "kg.csv"
    triples.write_text("head,relation,tail\nspleen,part of,lymphatic system\n"
                       "spleen,site of,splenomegaly\n", encoding="utf-8")
    KnowledgeGraph.build(folder / "kg.sqlite", [load_generic(triples)])
    corpus = folder / "corpus.jsonl"
    words = " ".join(f"word{i}" for i in range(300))
    corpus.write_text(json.dumps({"id": "d1", "title": "t", "content": words}) + "\n",
                      encoding="utf-8")
    return {"index": index, "router": str(folder / "router"), "tower": str(folder / "tower"),
            "kg": str(folder / "kg.sqlite"), "image": sample_dir / SPLEEN_IMAGE,
            "sample": sample_dir, "corpus": corpus, "folder": folder}


def _base(world: dict[str, Any]) -> Config:
    """What every query-time probe starts from: the echo generator (no model to load)."""
    return Config(generator=Component(name="echo"))


def _retrieval(world: dict[str, Any], cfg: Config) -> dict[str, Any]:
    from mmedrag.pipeline import build

    found = build(cfg, world["index"]).retrieve(QUESTION, world["image"])
    return {"ids": [h.id for h in found.candidates], "kept": [h.id for h in found.hits],
            "route": found.route.to_dict(), "retrievers": found.retrievers,
            "trace": found.trace}


def _answer(world: dict[str, Any], cfg: Config) -> dict[str, Any]:
    from mmedrag.pipeline import build

    try:
        answer = build(cfg, world["index"]).answer(QUESTION, image=world["image"],
                                                   task="closed_vqa")
    except MmedragError as exc:  # refused with a clear message: a visible effect too
        return {"refused": str(exc)}
    data = answer.to_dict()
    return {key: data[key] for key in ("text", "used_rag", "selection", "messages", "trace")}


def _indexed(world: dict[str, Any], cfg: Config, source: str = "pairs") -> dict[str, Any]:
    """Run ``mmedrag index`` with the config as a user would; what the index then says."""
    from mmedrag.cli.main import main
    from mmedrag.index import Index

    folder = world["folder"] / f"idx-{abs(hash(cfg.model_dump_json()))}-{source}"
    config_file = folder.with_suffix(".yaml")
    config_file.write_text(cfg.to_yaml(), encoding="utf-8")
    manifest = world["sample"] / "pairs.jsonl" if source == "pairs" else world["corpus"]
    assert main(["index", str(manifest), "--index", str(folder), "--config", str(config_file),
                 "--limit", "6", "--json"]) == 0
    index = Index.open(folder)
    info = index.info()
    return {"text": info["text_encoder"], "image": info["image_encoder"],
            "store": info["store"], "count": info["count"],
            "bm25": (folder / "bm25").exists()}


def _prices(world: dict[str, Any], cfg: Config) -> Any:
    from mmedrag.evaluation.runner import Runner
    from mmedrag.evaluation.tasks import resolve_tasks
    from mmedrag.evaluation.variants import parse_variants
    from mmedrag.pipeline import build

    questions = world["folder"] / "q.jsonl"
    questions.write_text(json.dumps({"id": "q1", "question": QUESTION, "answer": "yes"}) + "\n")
    out = world["folder"] / f"run-{abs(hash(cfg.model_dump_json()))}"
    metrics = Runner(build(cfg, world["index"]), resolve_tasks(f"vqa-closed={questions}"), out,
                     parse_variants("no-rag"), progress=False).run()
    return metrics["tasks"]["vqa-closed"]["variants"]["no-rag"]["usage"]["cost_total_usd"]


Probe = tuple[Callable[[dict[str, Any]], Any], Callable[[dict[str, Any], Config], Any],
              Callable[[dict[str, Any], Config], Config]]


def _keep(world: dict[str, Any], cfg: Config) -> Config:
    return cfg


def _with_router(world: dict[str, Any], cfg: Config) -> Config:
    return with_value(cfg, "retrieval.router", world["router"])


# field → (changed value from the world, what to observe, the base config's extra settings)
PROBES: dict[str, Probe] = {
    "index.text_encoder": (lambda w: {"name": "hashing", "options": {"dim": 64}}, _indexed,
                           lambda w, c: with_value(c, "index.text_encoder",
                                                   {"name": "hashing", "options": {}})),
    "index.image_encoder": (lambda w: {"name": "thumbnail", "options": {}}, _indexed,
                            lambda w, c: with_value(c, "index.text_encoder",
                                                    {"name": "hashing", "options": {}})),
    "index.store": (lambda w: {"name": "embedded", "options": {"exact_below": 1}}, _indexed,
                    lambda w, c: with_value(c, "index.text_encoder",
                                            {"name": "hashing", "options": {}})),
    "index.bm25": (lambda w: False, _indexed,
                   lambda w, c: with_value(c, "index.text_encoder",
                                           {"name": "hashing", "options": {}})),
    "index.chunk_tokens": (lambda w: 50, lambda w, c: _indexed(w, c, "corpus"),
                           lambda w, c: with_value(c, "index.text_encoder",
                                                   {"name": "hashing", "options": {}})),
    "index.chunk_overlap": (lambda w: 0, lambda w, c: _indexed(w, c, "corpus"),
                            lambda w, c: with_value(c, "index.text_encoder",
                                                    {"name": "hashing", "options": {}})),
    "retrieval.mode": (lambda w: "bm25", _retrieval, _keep),
    "retrieval.k": (lambda w: 3, _retrieval, _keep),
    "retrieval.router": (lambda w: w["router"], _retrieval, _keep),
    "retrieval.router_threshold": (lambda w: 1.0, _retrieval, _with_router),
    "retrieval.image_text": (lambda w: w["tower"], _retrieval, _keep),
    "retrieval.kg": (lambda w: {"name": "kg", "options": {"kg_path": w["kg"],
                                                          "encoder": "hashing"}},
                     _retrieval, _keep),
    "retrieval.hyde": (lambda w: True, _retrieval, _keep),
    "reranker": (lambda w: {"name": "mmr", "options": {"lambda_mult": 0.3}}, _retrieval, _keep),
    "selector": (lambda w: {"name": "fixed", "options": {"k": 1}}, _retrieval, _keep),
    "generator": (lambda w: {"name": "echo", "options": {"name": "echo-2"}}, _answer, _keep),
    "prompt_version": (lambda w: "v0", _answer, _keep),
    "retrieve_on_demand": (lambda w: 0.0, _answer, _keep),
    "prices": (lambda w: {"echo": {"input_per_1m": 1.0, "output_per_1m": 2.0}}, _prices, _keep),
}


def test_every_config_field_has_a_probe() -> None:
    assert sorted(leaf_fields(Config)) == sorted(PROBES), (
        "a Config field without a probe here is a setting nobody checked: add a probe that "
        "shows what it changes, or refuse the field")


@pytest.mark.parametrize("path", sorted(PROBES))
def test_field_changes_behaviour(path: str, world: dict[str, Any]) -> None:
    changed, observe, prepare = PROBES[path]
    base = prepare(world, _base(world))
    before = observe(world, base)
    after = observe(world, with_value(base, path, changed(world)))
    assert before != after, f"setting {path} changed nothing a user can see"


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load_and_set_only_live_fields(example: Path) -> None:
    Config.from_yaml(example)
    written = yaml.safe_load(example.read_text(encoding="utf-8")) or {}
    unknown = [f for f in set_fields(written, Config) if f not in PROBES]
    assert not unknown, f"{example.name} sets fields without a probe: {unknown}"


def test_removed_and_misspelt_fields_are_refused(tmp_path: Path) -> None:
    from mmedrag.errors import UsageError

    bad = tmp_path / "old.yaml"
    bad.write_text("retrieval:\n  router_treshold: 0.6\n", encoding="utf-8")
    with pytest.raises(UsageError, match="retrieval.router_treshold"):
        Config.from_yaml(bad)
    bad.write_text("retrieval:\n  router_threshold: 1.5\n", encoding="utf-8")
    with pytest.raises(UsageError, match="retrieval.router_threshold"):
        Config.from_yaml(bad)
