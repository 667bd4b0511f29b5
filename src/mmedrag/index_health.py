"""Keeping an index honest: cross-checks on open, picking up a writer's commits, repair.

* ``cross_check``: a store holding fewer records than ``index.json`` recorded is damage (a
  truncated or replaced file), reported with the repair command, never served as an empty
  success.
* ``refresh``: a read-only index (the server) reloads rows committed since it opened (dense
  stores), ``index.json`` (counts, extras) and BM25 when the writer has saved a new one.
* ``repair``: salvages every readable row of a damaged store into a fresh one, drops records
  that lost their image vector (so ``--resume`` re-adds them whole), deletes the derived
  caches (HNSW graph, BM25) and rebuilds them and ``index.json`` from the SQLite truth.

Example:
    >>> repair_hint(Path("idx"))  # doctest: +ELLIPSIS
    "the index is damaged: run 'mmedrag repair --index idx', then ..."
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmedrag.errors import StoreDamaged
from mmedrag.stores.bm25 import BM25Index


def repair_hint(directory: Path) -> str:
    return (f"the index is damaged: run 'mmedrag repair --index {directory}', then re-add lost "
            f"records with 'mmedrag index MANIFEST --index {directory} --resume'")


def cross_check(index: Any) -> None:
    """Raise StoreDamaged when a store holds fewer records than index.json says."""
    counts = index.meta.get("counts") or {}
    for name, store, key in (("text", index.text_store, "records"),
                             ("image", index.image_store, "images")):
        recorded = int(counts.get(key, 0) or 0)
        if store is not None and store.count() < recorded:
            raise StoreDamaged(f"{index.dir / name}: holds {store.count()} records but "
                               f"index.json says {recorded}; {repair_hint(index.dir)}",
                               str(index.dir / name))


def refresh(index: Any) -> dict[str, int]:
    """Reload what a writer committed: store rows, index.json, a newly saved BM25."""
    arrived = sum(store.refresh() for store in (index.text_store, index.image_store)
                  if store is not None and hasattr(store, "refresh"))
    try:
        index.meta = json.loads((index.dir / "index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        pass  # mid-replace: keep the last good copy
    current = index._bm25
    if current is not None and BM25Index.stamp_of(index.dir / "bm25") != current.stamp:
        index._bm25 = BM25Index(index.dir / "bm25")
    return {"records": index.text_store.count(), "new": arrived}
