"""``mmedrag repair``: salvage what a damaged index still holds into fresh stores, then rebuild
the graph, BM25 and counts (kept apart from ``index_health``, whose checks ``Index`` runs on
open, so that nothing imports in a circle)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.index import Index
from mmedrag.stores.lock import WriterLock


def _salvage(db: Path) -> list[tuple[Any, ...]]:
    """Every row of ``records`` that can still be read, in seq order (damaged pages skipped)."""
    rows: list[tuple[Any, ...]] = []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows
    last, misses = 0, 0
    with conn:
        while misses < 1000:
            try:
                chunk = conn.execute("SELECT seq, id, domain, data, vec FROM records WHERE seq > ? "
                                     "ORDER BY seq LIMIT 500", (last,)).fetchall()
            except sqlite3.DatabaseError:
                last, misses = last + 1, misses + 1
                continue
            if not chunk:
                break
            rows.extend(chunk)
            last, misses = chunk[-1][0], 0
    conn.close()
    return rows


def _store_ok(db: Path) -> bool:
    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False


def _vectors_ok(folder: Path, db: Path, dim: int) -> bool:
    """The vector file holds every row the committed records point at."""
    from mmedrag.stores.vector_file import DTYPES

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        top = conn.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0
        dtype = conn.execute("SELECT value FROM state WHERE key='vector_dtype'").fetchone()
        moved = conn.execute("SELECT value FROM state WHERE key='vectors'").fetchone()
    if not moved:  # vectors still inside SQLite (older store): migrated on open
        return True
    name, np_dtype = DTYPES[dtype[0] if dtype else "float32"]
    path = folder / name
    size = path.stat().st_size if path.exists() else 0
    return size >= top * dim * np.dtype(np_dtype).itemsize


def _rebuild_store(folder: Path, dim: int, options: dict[str, Any]) -> dict[str, Any]:
    """Replace a damaged store with one holding every salvageable row (records whose vector
    is unreadable are left out, so ``--resume`` adds them again)."""
    from mmedrag.stores.graph_cache import cache_files
    from mmedrag.stores.vector_file import DTYPES

    db = folder / "store.sqlite"
    for stem in ("hnsw", "ivfpq"):
        for cache in cache_files(stem):
            (folder / cache).unlink(missing_ok=True)
    if _store_ok(db) and _vectors_ok(folder, db, dim):
        return {"salvaged": -1}
    rows = _salvage(db) if db.is_file() else []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved: dict[str, Path] = {}
    for name in ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm",
                 *(file for file, _ in DTYPES.values())]:
        part = folder / name
        if part.exists():
            moved[name] = folder / f"damaged-{stamp}-{name}"
            part.rename(moved[name])
    from mmedrag.records import Record
    from mmedrag.stores.embedded import EmbeddedStore

    store = EmbeddedStore(folder, dim=dim, **options)
    old: np.ndarray | None = None  # the moved vector file, whole rows only (mapped, not read)
    for name, np_dtype in DTYPES.values():
        if name in moved and moved[name].stat().st_size >= dim * np.dtype(np_dtype).itemsize:
            # a file cut mid-row is not a multiple of the dtype's size
            usable = moved[name].stat().st_size // (dim * np.dtype(np_dtype).itemsize)
            old = np.memmap(moved[name], dtype=np_dtype, mode="r", shape=(usable, dim))
    kept, lost = 0, 0
    for start in range(0, len(rows), 4096):  # batch by batch: never every vector in RAM
        batch: list[tuple[Record, np.ndarray]] = []
        for seq, _id, _domain, data, blob in rows[start:start + 4096]:
            if blob:
                vector = np.frombuffer(blob, np.float32)
            elif old is not None and seq - 1 < len(old):
                vector = np.asarray(old[seq - 1], np.float32)
            else:
                vector = None
            if vector is None or len(vector) != dim or not np.isfinite(vector).all():
                lost += 1
                continue
            batch.append((Record.from_dict(json.loads(data)), vector))
        if batch:
            store.add([r for r, _ in batch], np.stack([v for _, v in batch]))
            kept += len(batch)
    store.close()
    return {"salvaged": kept, "without_vector": lost}


def repair(directory: str | Path) -> dict[str, Any]:
    """Repair the index at ``directory`` in place; returns what was kept and removed. The writer
    lock is held from the first file touched to the last, so no ingest runs meanwhile."""
    guard = WriterLock(Path(directory))
    guard.acquire()
    try:
        return _repair(directory)
    finally:
        guard.release()


def _repair(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    meta = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    report: dict[str, Any] = {}
    for name in ("text", "image"):
        encoder = meta.get(f"{name}_encoder")
        if not encoder:
            continue
        store_options = dict((meta.get("store") or {}).get("options") or {})
        report[name] = _rebuild_store(directory / name, int(encoder["dim"]), store_options)
    meta["counts"] = {}
    (directory / "index.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(directory / "bm25", ignore_errors=True)
    index = Index.open(directory)
    index.writing()
    report["removed_without_image_vector"] = _drop_half_records(index)
    index.finalize()
    report["count"] = index.count()
    index.close()
    return report


def _drop_half_records(index: Any) -> int:
    """Delete records whose image vector (or text vector) is missing, so --resume re-adds them."""
    if index.image_store is None:
        return 0
    with_image = [r.id for r in index.text_store.iter_records() if r.image]
    have = index.image_store.has(with_image)
    text_ids = {r.id for r in index.text_store.iter_records()}
    orphans = [r.id for r in index.image_store.iter_records() if r.id not in text_ids]
    broken = [i for i in with_image if i not in have]
    if broken:
        index.text_store.delete(broken)
    if orphans:
        index.image_store.delete(orphans)
    return len(broken) + len(orphans)
