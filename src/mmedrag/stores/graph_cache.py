"""The saved ANN index (HNSW graph or IVF-PQ): a cache beside the SQLite truth, trusted only
when it checks out.

``hnsw.faiss`` (``ivfpq.faiss`` for the IVF-PQ kind) is written to a temporary file, digested (BLAKE2b-128), and atomically renamed;
its sidecar ``hnsw.json`` then records the digest, the number of store rows the graph covers,
its node count, HNSW ``M``, the vector dimension, the delete epoch and the graph format. On
open, any disagreement — a flipped bit (digest), a sidecar from another build (rows, nodes,
dim, M, epoch, format), a torn or missing file — means the graph is rebuilt from SQLite (an
IVF-PQ index older than a deletion instead drops the deleted rows on load: ``embedded.py``).

Example:
    >>> read_graph(Path("/nonexistent"), {"m": 32}) is None
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

GRAPH_FORMAT = "ann-rows/3"  # node ids are vector-file rows (SQLite seq - 1)
GRAPH_FILE, SIDECAR = "hnsw.faiss", "hnsw.json"


def cache_files(stem: str) -> tuple[str, str]:
    """(index file, sidecar) names of the cache of one ANN kind."""
    return f"{stem}.faiss", f"{stem}.json"


def file_digest(path: Path) -> str:
    """BLAKE2b-128 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_graph(folder: Path, expect: dict[str, Any], stem: str = "hnsw"
               ) -> tuple[Any, dict[str, Any]] | None:
    """The saved graph and its sidecar when every field in ``expect`` matches and the digest
    is right; None (rebuild) otherwise."""
    import faiss

    graph_name, sidecar_name = cache_files(stem)
    meta_path, graph_path = folder / sidecar_name, folder / graph_name
    if not (meta_path.exists() and graph_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != GRAPH_FORMAT or any(meta.get(k) != v for k, v in expect.items()):
            return None
        if meta.get("digest") != file_digest(graph_path):
            return None
        index = faiss.read_index(str(graph_path))
    except (OSError, ValueError, RuntimeError, AttributeError):  # torn or foreign file
        return None
    if index.ntotal != meta.get("nodes") or index.d != meta.get("dim"):
        return None
    return index, meta


def write_graph(folder: Path, index: Any, meta: dict[str, Any], stem: str = "hnsw") -> None:
    """Save ``index`` atomically with a sidecar holding ``meta`` plus digest and format."""
    import faiss

    graph_name, sidecar_name = cache_files(stem)
    tmp = folder / (graph_name + ".tmp")
    faiss.write_index(index, str(tmp))
    digest = file_digest(tmp)
    os.replace(tmp, folder / graph_name)
    sidecar = {**meta, "nodes": int(index.ntotal), "dim": int(index.d), "digest": digest,
               "format": GRAPH_FORMAT}
    (folder / (sidecar_name + ".tmp")).write_text(json.dumps(sidecar))
    os.replace(folder / (sidecar_name + ".tmp"), folder / sidecar_name)
