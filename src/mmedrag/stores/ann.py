"""The approximate indexes of the embedded store, chosen by size, and their memory model.

Kinds (``store.options.kind``):

``hnsw``   FAISS HNSW over float32 copies of the distinct vectors (one node per distinct vector;
           rows sharing it are found through their node). Best recall and latency; RAM grows
           with ``rows × (4·dim + 8·M)`` bytes, so it is the kind for small and mid indexes.
``ivfpq``  FAISS IVF (a coarse quantizer over ``lists`` centroids, HNSW from 256 lists) with
           product-quantised codes of ``pq_m`` bytes per vector; the ``rerank`` best candidates
           are re-scored exactly from the memory-mapped vector file. RAM ≈ ``rows × (pq_m + 8)``
           bytes plus the centroids, whatever the dimension. Trained on a sample, filled in blocks.
``flat``   No ANN: exact search over the memory-mapped vectors (blockwise).
``auto``   ``hnsw`` below ``ivf_above`` rows (default 1,000,000), ``ivfpq`` from there on.

Example:
    >>> params = AnnParams()
    >>> resolve_kind("auto", 10_000_000, params)
    'ivfpq'
    >>> round(memory_estimate("ivfpq", 10_000_000, 384, params)["ann_bytes"] / 2**30, 2)
    0.53
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmedrag.errors import UsageError

KINDS = ("auto", "hnsw", "ivfpq", "flat")


@dataclass(frozen=True)
class AnnParams:
    """Parameters of every kind (those of other kinds are ignored)."""

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    lists: int = 0  # IVF lists; 0: the power of two nearest sqrt(rows), at least 64
    pq_m: int = 0  # PQ codes per vector; 0: dim / 8
    pq_bits: int = 8  # bits per PQ code (8: one byte)
    nprobe: int = 32
    rerank: int = 200
    ivf_above: int = 1_000_000
    train_sample: int = 0  # 0: 40 per list

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"store kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def resolve_kind(kind: str, rows: int, params: AnnParams) -> str:
    """The kind an index of ``rows`` vectors uses."""
    if kind == "auto":
        kind = "ivfpq" if rows >= params.ivf_above else "hnsw"
    if kind == "ivfpq" and rows < 4 * max(ivf_lists(rows, params), 2 ** params.pq_bits):
        return "flat"  # too few rows to train the quantizers: exact search is cheap anyway
    return kind


def ivf_lists(rows: int, params: AnnParams) -> int:
    """IVF lists: ``params.lists``, or the power of two nearest sqrt(rows) (at least 64)."""
    if params.lists:
        return int(params.lists)
    return max(64, 2 ** round(math.log2(max(math.sqrt(max(rows, 1)), 1))))


def pq_bytes(dim: int, params: AnnParams) -> int:
    m = params.pq_m or max(1, dim // 8)
    if dim % m:
        raise UsageError(f"store option pq_m={m} must divide the vector dimension {dim}")
    return m


def memory_estimate(kind: str, rows: int, dim: int, params: AnnParams,
                    vector_dtype: str = "float32") -> dict[str, Any]:
    """Resident bytes of the ANN structure and the store's per-row arrays, and the vector
    file's bytes on disk (a model: measured figures are in benchmarks/scale.py)."""
    per_row_arrays = rows * 5  # alive flag + domain code (int32)
    if kind == "hnsw":
        ann = rows * (4 * dim + 8 * params.m * 1.05 + 8)  # vectors, level-0 links, id map
    elif kind == "ivfpq":
        lists = ivf_lists(rows, params)
        m = pq_bytes(dim, params)
        ann = rows * (math.ceil(m * params.pq_bits / 8) + 8) + lists * (4 * dim + 8 * 32) \
            + m * 2 ** params.pq_bits * (dim // m) * 4
    else:
        ann = 0
    itemsize = 2 if vector_dtype == "float16" else 4
    return {"kind": kind, "rows": rows, "ann_bytes": int(ann),
            "arrays_bytes": int(per_row_arrays), "ram_bytes": int(ann + per_row_arrays),
            "vector_file_bytes": int(rows * dim * itemsize)}


def new_hnsw(dim: int, params: AnnParams) -> Any:
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT))
    faiss.downcast_index(index.index).hnsw.efConstruction = params.ef_construction  # type: ignore[attr-defined]
    return index


def new_ivfpq(dim: int, rows: int, params: AnnParams) -> Any:
    import faiss

    lists, m = ivf_lists(rows, params), pq_bytes(dim, params)
    quantizer = f"IVF{lists}_HNSW32" if lists >= 256 else f"IVF{lists}"
    return faiss.index_factory(dim, f"{quantizer},PQ{m}x{params.pq_bits}np",
                               faiss.METRIC_INNER_PRODUCT)


def train_size(rows: int, lists: int, params: AnnParams) -> int:
    # faiss wants >= 39 points per IVF list and per PQ centroid (256)
    return min(rows, params.train_sample or max(40 * lists, 40 * 2 ** params.pq_bits))


def ivf_search_params(index: Any, nprobe: int, bitmap: np.ndarray | None) -> Any:
    """Search parameters for an IVF index (``bitmap``: packed allowed rows, or None)."""
    import faiss

    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if hasattr(quantizer, "hnsw"):
        q_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        q_params.efSearch = max(64, 2 * nprobe)
        params.quantizer_params = q_params
    if bitmap is not None:
        params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    return params


def packed(mask: np.ndarray) -> np.ndarray:
    """A boolean row mask as the little-endian bitmap FAISS's IDSelectorBitmap reads."""
    return np.packbits(mask, bitorder="little")
