"""`mmedrag index --ray`: texts encoded by Ray Data actors, written by the one index writer.

One local Ray instance (2 CPUs) is started for the module; the CLI runs in a subprocess that
joins it by its address, as a driver on a cluster would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mmedrag.errors import IndexMismatchError, MmedragError, UsageError

ray = pytest.importorskip("ray", reason="the ray extra is not installed "
                                        "(pip install 'mmedrag[ray]')")

CONFIG = "index:\n  text_encoder: {name: hashing, options: {dim: 256}}\n  image_encoder: null\n"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mmedrag", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray instance with 2 CPUs; yields its address."""
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def records(sample_dir: Path) -> list:
    from mmedrag.ingest.manifest import read_manifest

    return read_manifest(sample_dir / "pairs.jsonl").records


def _index(path: Path):  # noqa: ANN202
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index

    config = IndexConfig(text_encoder=Component(name="hashing", options={"dim": 256}),
                         image_encoder=None)
    return Index.open(path, create=True, config=config)


def test_cli_on_a_ray_cluster_builds_the_single_process_index(
        cluster: str, tmp_path: Path, sample_dir: Path, records: list) -> None:
    from mmedrag.index import Index

    (tmp_path / "cfg.yaml").write_text(CONFIG)
    pairs = str(sample_dir / "pairs.jsonl")
    common = ("--config", str(tmp_path / "cfg.yaml"), "--json")
    single = run("index", pairs, "--index", str(tmp_path / "single"), *common)
    assert single.returncode == 0, single.stderr
    # half first, on one process; the rest on Ray: stored ids are not sent to the cluster
    first = run("index", pairs, "--index", str(tmp_path / "ray"), "--limit", "14", *common)
    assert first.returncode == 0, first.stderr
    out = run("index", pairs, "--index", str(tmp_path / "ray"), "--ray", cluster,
              "--ray-workers", "2", *common)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["added"] == 22 and summary["already_indexed"] == 14
    assert summary["count"] == 36
    assert summary["ray"] == {"address": cluster, "workers": 2, "sent": 22}

    a, b = Index.open(tmp_path / "single"), Index.open(tmp_path / "ray")
    ids = [r.id for r in records]
    assert a.count() == b.count() == len(ids)
    np.testing.assert_allclose(b.text_store.vectors(ids), a.text_store.vectors(ids), atol=1e-6)
    for record in records:
        assert b.search_text_dense(record.text, k=1)[0].id == record.id
    a.close()
    b.close()


def test_vectors_stream_in_order_and_skip_what_the_writer_skips(
        cluster: str, tmp_path: Path, records: list) -> None:
    from mmedrag.encoders.distributed import RayTextVectors
    from mmedrag.records import Record

    index = _index(tmp_path / "idx")
    source = RayTextVectors(index.meta["text_encoder"], address="auto", workers=2,
                            batch_size=5)
    try:
        assert source.workers == 2
        bad = Record(id="empty", text="   ")  # refused by the writer, never asked for
        batch = [*records[:10], bad, *records[10:]]
        summary = index.add(batch, batch_size=7, text_vectors=source)
        assert summary.added == len(records) and summary.skipped == 1
        assert source.sent == len(batch)
        reference = index.text_encoder.encode_texts([r.text for r in records])
        stored = index.text_store.vectors([r.id for r in records])
        np.testing.assert_allclose(stored, reference, atol=1e-6)
        with pytest.raises(MmedragError, match="not sent to the Ray cluster"):
            source.vectors([Record(id="never-started", text="x")])
    finally:
        source.close()
        index.close()
    assert ray.is_initialized()  # a source that joined a running instance leaves it running


def test_an_encoder_that_loads_differently_on_the_workers_is_refused(
        cluster: str, tmp_path: Path, records: list) -> None:
    from mmedrag.encoders.distributed import RayTextVectors

    index = _index(tmp_path / "idx")
    signature = dict(index.meta["text_encoder"], version="0-other")
    source = RayTextVectors(signature, workers=1)
    try:
        with pytest.raises(IndexMismatchError, match="loads on the Ray worker as hashing-256 1"):
            index.add(records, text_vectors=source)
        assert index.count() == 0
    finally:
        source.close()
        index.close()


def test_bad_ray_options_are_one_line_errors(cluster: str, tmp_path: Path,
                                             sample_dir: Path) -> None:
    from mmedrag.encoders.distributed import RayTextVectors

    signature = {"name": "hashing", "options": {}, "model": "hashing-512", "version": "1",
                 "dim": 512}
    with pytest.raises(UsageError, match="--ray-workers 3: the Ray cluster has 2 CPUs"):
        RayTextVectors(signature, workers=3)
    out = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(tmp_path / "k"),
              "--ray", cluster, "--ray-workers", "3")
    assert out.returncode == 2 and "--ray-workers 3: the Ray cluster has 2 CPUs" in out.stderr
    assert not (tmp_path / "k").exists()  # refused before the index is created
    out = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(tmp_path / "i"),
              "--ray-workers", "2")
    assert out.returncode == 2 and "--ray-workers needs --ray" in out.stderr
    assert not (tmp_path / "i").exists()
    out = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(tmp_path / "j"),
              "--ray", "127.0.0.1:1")
    assert out.returncode == 1 and "--ray 127.0.0.1:1: cannot connect to Ray" in out.stderr


def test_a_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedrag.encoders.distributed import RayTextVectors

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray sees
    with pytest.raises(MmedragError, match=r"pip install 'mmedrag\[ray\]'"):
        RayTextVectors({"name": "hashing", "options": {}, "model": "hashing-512",
                        "version": "1", "dim": 512})
