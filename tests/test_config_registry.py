"""Config validation, secrets from the environment only, and the lazy registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmedrag.config import Component, Config, resolve_secret
from mmedrag.errors import UsageError
from mmedrag.records import Document, Pair, Query
from mmedrag.registry import REGISTRY, Registry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_shipped_example_configs_validate(name: str) -> None:
    config = Config.from_yaml(EXAMPLES / name)
    assert Config.model_validate(__import__("yaml").safe_load(config.to_yaml())) == config


def test_inline_secret_is_refused_and_env_secret_resolves(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator: {name: openai, options: {api_key: sk-123456789abcdefgh}}\n")
    with pytest.raises(UsageError, match=r"bad.yaml: field 'generator.options'.*environment"):
        Config.from_yaml(bad)
    monkeypatch.setenv("MY_KEY", "s3cret")
    assert resolve_secret({"api_key_env": "MY_KEY"}, "api_key") == "s3cret"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(UsageError, match="MY_KEY"):
        resolve_secret({"api_key_env": "MY_KEY"}, "api_key")


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("retrieval: {k: many}\n")
    with pytest.raises(UsageError, match=r"c.yaml: field 'retrieval.k'"):
        Config.from_yaml(path)
    path.write_text("selector: [unclosed\n")
    with pytest.raises(UsageError, match=r"c.yaml: not valid YAML"):
        Config.from_yaml(path)
    with pytest.raises(UsageError, match="not found"):
        Config.from_yaml(tmp_path / "missing.yaml")


def test_registry_did_you_mean_and_lazy_import() -> None:
    with pytest.raises(UsageError, match="did you mean 'hybrid'"):
        REGISTRY.target("retriever", "hybird")
    with pytest.raises(UsageError, match="unknown component kind"):
        REGISTRY.names("nope") or REGISTRY.target("nope", "x")
    registry = Registry()
    registry.register("thing", "doc", "mmedrag.records:Document")
    assert registry.get("thing", "doc") is Document
    with pytest.raises(UsageError, match="module:Class"):
        registry.register("thing", "bad", "no-colon")
    assert Component(name="x").options == {}


def test_content_ids_are_stable_and_distinct() -> None:
    a = Pair.create(image="a.png", text="Normal.")
    assert a.id == Pair.create(image="a.png", text="Normal.").id
    assert a.id != Pair.create(image="b.png", text="Normal.").id
    assert Document.create("x", title="t").id.startswith("d")
    with pytest.raises(ValueError):
        Query()
