"""deploy/: the compose file, the Milvus Helm values and the server manifests agree with what
mmedrag reads: the config validates, its Milvus URI names the Milvus service and port, and each
``mmedrag`` command line parses with the real CLI (ports, paths and key variables included)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from mmedrag.config import Config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _params(command: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``mmedrag SUBCOMMAND ...`` with the real Typer/click command; return its params."""
    import typer

    from mmedrag.cli.main import app

    assert command[0] == "mmedrag", command
    group = typer.main.get_command(app)
    sub = group.commands[command[1]]  # type: ignore[attr-defined]
    context = sub.make_context(command[1], list(command[2:]))
    return command[1], dict(context.params)


def _config_from_text(text: str, tmp_path: Path) -> Config:
    path = tmp_path / "mmedrag.yaml"
    path.write_text(text, encoding="utf-8")
    return Config.from_yaml(path)  # the same validation 'mmedrag serve -c' applies


def _check_milvus_store(config: Config) -> tuple[str, int]:
    from mmedrag.registry import REGISTRY

    store = config.index.store
    assert store.name == "milvus"
    accepted = inspect.signature(REGISTRY.get("store", "milvus")).parameters
    assert set(store.options) <= set(accepted), set(store.options) - set(accepted)
    uri = urlparse(store.options["uri"])
    assert uri.scheme == "http" and uri.hostname and uri.port
    return uri.hostname, uri.port


def _container_port(mapping: str) -> int:
    return int(str(mapping).split(":")[-1].split("/")[0])


def test_compose_wires_milvus_standalone_and_the_rest_server(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"etcd", "minio", "milvus", "mmedrag", "mmedrag-index"} <= set(services)
    milvus = services["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    etcd_host, etcd_port = milvus["environment"]["ETCD_ENDPOINTS"].split(":")
    assert etcd_host == "etcd" and f"0.0.0.0:{etcd_port}" in services["etcd"]["command"]
    assert milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"  # MinIO's S3 port
    assert {"etcd", "minio"} <= set(milvus["depends_on"])

    config = Config.from_yaml(DEPLOY / "mmedrag.yaml")
    host, port = _check_milvus_store(config)
    assert host == "milvus" and port in {_container_port(p) for p in milvus["ports"]}

    server = services["mmedrag"]
    name, params = _params(server["command"])
    assert name == "serve" and params["host"] == "0.0.0.0"
    assert f"{params['port']}:{params['port']}" in server["ports"]
    assert params["api_key_env"] in server["environment"]
    mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":")
                  for v in server["volumes"])
    assert mounts["./mmedrag.yaml"] == str(params["config"])
    assert mounts["index"] == str(params["index"])
    assert "milvus" in server["depends_on"]

    writer = services["mmedrag-index"]
    name, params = _params([*writer["entrypoint"], "/corpus/medcorp.jsonl"])
    assert name == "index" and str(params["config"]) == "/config/mmedrag.yaml"
    assert f"index:{params['index']}" in writer["volumes"]
    assert set(compose["volumes"]) >= {"index", "milvus", "etcd", "minio"}


def test_helm_values_and_manifests_agree_on_the_milvus_service(tmp_path: Path) -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "milvus-values.yaml").read_text(encoding="utf-8"))
    assert values["cluster"]["enabled"] is True
    assert values["etcd"]["replicaCount"] >= 3 and values["minio"]["mode"] == "distributed"
    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in _load_all(DEPLOY / "helm" / "mmedrag-server.yaml")}
    config = _config_from_text(docs["ConfigMap", "mmedrag-config"]["data"]["mmedrag.yaml"],
                               tmp_path)
    host, port = _check_milvus_store(config)
    assert host.split(".")[0] == values["fullnameOverride"]
    assert re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local", host)
    assert port == values["service"]["port"]
    compose_config = Config.from_yaml(DEPLOY / "mmedrag.yaml")
    assert config.index.text_encoder == compose_config.index.text_encoder  # one index, two homes

    deployment = docs["Deployment", "mmedrag"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    name, params = _params(container["args"])
    assert name == "serve" and params["host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == params["port"]
    assert params["api_key_env"] in {e["name"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["index"] == str(params["index"])
    assert Path(mounts["config"]) / "mmedrag.yaml" == params["config"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert '@app.get("/healthz"' in (Path(__file__).resolve().parents[1] / "src" / "mmedrag"
                                     / "server" / "app.py").read_text(encoding="utf-8")
    service = docs["Service", "mmedrag"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] in ports

    job = docs["Job", "mmedrag-index"]["spec"]["template"]["spec"]["containers"][0]
    name, params = _params(job["args"])
    assert name == "index" and str(params["index"]) == mounts["index"]


def test_the_image_installs_extras_that_exist() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text(encoding="utf-8"))
    extras = project["project"]["optional-dependencies"]
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    wanted = re.search(r'pip install --no-cache-dir "\.\[([a-z,-]+)\]"', dockerfile)
    assert wanted is not None
    assert set(wanted.group(1).split(",")) <= set(extras)
    pinned = [d for d in project["project"]["dependencies"] if d.startswith("torch==")]
    assert pinned and f"pip install --no-cache-dir {pinned[0]}" in dockerfile


@pytest.mark.parametrize("path", ["docker-compose.yml", "mmedrag.yaml", "helm/milvus-values.yaml",
                                  "helm/mmedrag-server.yaml"])
def test_deploy_files_are_valid_yaml(path: str) -> None:
    assert _load_all(DEPLOY / path)
