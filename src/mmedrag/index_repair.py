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


def _rebuild_store(folder: Path, dim: int) -> dict[str, Any]:
    """Replace a damaged ``store.sqlite`` with one holding every salvageable row."""
    db = folder / "store.sqlite"
    for cache in ("hnsw.faiss", "hnsw.json"):
        (folder / cache).unlink(missing_ok=True)
    if _store_ok(db):
        return {"salvaged": -1}
    rows = _salvage(db) if db.is_file() else []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        part = folder / f"store.sqlite{suffix}"
        if part.exists():
            part.rename(folder / f"damaged-{stamp}-store.sqlite{suffix}")
    from mmedrag.stores.embedded import EmbeddedStore

    EmbeddedStore(folder, dim=dim).close()
    return {"salvaged": len(rows), "rows": rows}


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
    salvaged: dict[str, list[tuple[Any, ...]]] = {}
    for name in ("text", "image"):
        encoder = meta.get(f"{name}_encoder")
        if not encoder:
            continue
        result = _rebuild_store(directory / name, int(encoder["dim"]))
        salvaged[name] = result.pop("rows", [])
        report[name] = result
    meta["counts"] = {}
    (directory / "index.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(directory / "bm25", ignore_errors=True)
    index = Index.open(directory)
    index.writing()
    for name, rows in salvaged.items():
        store = index.text_store if name == "text" else index.image_store
        with store._lock, store._db:
            store._db.executemany("INSERT OR IGNORE INTO records (id, domain, data, vec) "
                                  "VALUES (?, ?, ?, ?)", [r[1:] for r in rows])
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
